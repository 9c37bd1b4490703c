// The vhost-user message payloads (QEMU docs/interop/vhost-user.rst, "Message types"), as data
// only: one struct each, its one decoder and its one encoder. The backend decodes them
// (VhostUserConnection, BackendRequestChannel); the frontend side (FrontendSide) encodes the
// same structs, so each layout is written once. Payloads whose size varies (the memory table,
// config space) check their own consistency and report it with the backend's errors.

import SystemSupport

/// A single `u64`: feature bits (GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES), GET_QUEUE_NUM,
/// GET_MAX_MEM_SLOTS, and the status of a REPLY_ACK or a backend-channel reply (0: success).
public struct U64Payload: VhostUserPayload {
    public static let size = 8
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public init(reading r: inout ByteReader) { value = r.u64() }
    public func write(_ w: ByteWriter) { w.u64(value) }
}

/// VhostUserVringState: `{u32 index, u32 num}` (SET_VRING_NUM, SET/GET_VRING_BASE,
/// SET_VRING_ENABLE).
public struct VringState: VhostUserPayload {
    public static let size = 8
    public var index: UInt32, num: UInt32
    public init(index: UInt32, num: UInt32) { self.index = index; self.num = num }
    public init(reading r: inout ByteReader) { self.init(index: r.u32(), num: r.u32()) }
    public func write(_ w: ByteWriter) { w.u32(index).u32(num) }
}

/// VhostUserVringAddr: `{u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log}`
/// (SET_VRING_ADDR).
public struct VringAddressPayload: VhostUserPayload {
    public static let size = 40
    public var index: UInt32, flags: UInt32, descriptor: UInt64, used: UInt64, available: UInt64, log: UInt64
    public init(index: UInt32, flags: UInt32 = 0, descriptor: UInt64, used: UInt64, available: UInt64, log: UInt64 = 0) {
        self.index = index; self.flags = flags; self.descriptor = descriptor; self.used = used; self.available = available; self.log = log
    }
    public init(reading r: inout ByteReader) {
        self.init(index: r.u32(), flags: r.u32(), descriptor: r.u64(), used: r.u64(), available: r.u64(), log: r.u64())
    }
    public func write(_ w: ByteWriter) { w.u32(index).u32(flags).u64(descriptor).u64(used).u64(available).u64(log) }
}

/// The `u64` of SET_VRING_KICK/CALL/ERR: the vring index in the low byte; bit 8 says "no fd"
/// (polling mode); every other bit is reserved.
public struct VringFDPayload: VhostUserPayload {
    public static let size = 8
    public static let indexMask: UInt64 = 0xff
    public static let noFD: UInt64 = 1 << 8
    /// The raw value as sent.
    public var value: UInt64
    public init(value: UInt64) { self.value = value }
    /// Ring `index` with an fd attached, or without one (`hasFD: false`).
    public init(index: UInt32, hasFD: Bool = true) { value = UInt64(index) | (hasFD ? 0 : Self.noFD) }
    public init(reading r: inout ByteReader) { value = r.u64() }
    public func write(_ w: ByteWriter) { w.u64(value) }

    /// Bits set outside the index and the no-fd flag (a valid payload has none).
    public var reservedBits: UInt64 { value & ~(Self.indexMask | Self.noFD) }
    public var index: UInt32 { UInt32(value & Self.indexMask) }
    /// Whether an fd comes with the message.
    public var hasFD: Bool { value & Self.noFD == 0 }
}

/// VhostUserMemoryRegion: `{u64 guest_phys_addr, u64 memory_size, u64 userspace_addr, u64 mmap_offset}`.
public struct MemoryRegionPayload: VhostUserPayload {
    public static let size = 32
    public var guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64
    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestAddress = guestAddress; self.size = size; self.userAddress = userAddress; self.mmapOffset = mmapOffset
    }
    public init(reading r: inout ByteReader) {
        self.init(guestAddress: r.u64(), size: r.u64(), userAddress: r.u64(), mmapOffset: r.u64())
    }
    public func write(_ w: ByteWriter) { w.u64(guestAddress).u64(size).u64(userAddress).u64(mmapOffset) }
}

/// SET_MEM_TABLE payload: `{u32 nregions, u32 padding, regions[nregions]}` (one fd per region).
public struct MemoryTablePayload: Equatable, Sendable {
    /// VHOST_MEMORY_BASELINE_NREGIONS.
    public static let maxRegions = 8
    /// `nregions` and the padding.
    public static let headerSize = 8
    public var regions: [MemoryRegionPayload]
    public init(regions: [MemoryRegionPayload]) { self.regions = regions }

    /// Decodes a table of 1 to `maxRegions` regions whose size matches `nregions`; the errors
    /// name `request`.
    public init(decoding bytes: [UInt8], request: String) throws(VhostUserMessageError) {
        guard bytes.count >= Self.headerSize else { throw .badSize(request: request, got: bytes.count, expected: ">= 8") }
        var r = ByteReader(bytes)
        let n = Int(r.u32())
        _ = r.u32()
        guard n >= 1, n <= Self.maxRegions else { throw .invalidPayload(request: request, "\(n) regions") }
        let expected = Self.headerSize + n * MemoryRegionPayload.size
        guard bytes.count == expected else { throw .badSize(request: request, got: bytes.count, expected: "\(expected)") }
        var regions: [MemoryRegionPayload] = []
        for _ in 0..<n { regions.append(MemoryRegionPayload(reading: &r)) }
        self.init(regions: regions)
    }

    public var bytes: [UInt8] {
        let w = ByteWriter().u32(UInt32(regions.count)).u32(0)
        for r in regions { r.write(w) }
        return w.bytes
    }
}

/// ADD_MEM_REG / REM_MEM_REG payload: `{u64 padding, region}`.
public struct SingleMemoryRegionPayload: VhostUserPayload {
    public static let size = 40
    public var region: MemoryRegionPayload
    public init(region: MemoryRegionPayload) { self.region = region }
    public init(reading r: inout ByteReader) {
        _ = r.u64()
        self.init(region: MemoryRegionPayload(reading: &r))
    }
    public func write(_ w: ByteWriter) {
        w.u64(0)
        region.write(w)
    }
}

/// GET_CONFIG / SET_CONFIG payload: `{u32 offset, u32 size, u32 flags, u8 payload[size]}`.
public struct ConfigPayload: Equatable, Sendable {
    public static let headerSize = 12
    /// VHOST_USER_MAX_CONFIG_SIZE.
    public static let maxSize = 256
    public var offset: UInt32, size: UInt32, flags: UInt32, data: [UInt8]
    public init(offset: UInt32, size: UInt32, flags: UInt32 = 0, data: [UInt8]) {
        self.offset = offset; self.size = size; self.flags = flags; self.data = data
    }

    /// Decodes the header and takes every byte after it as `data`; nil when the header is not
    /// all there. Whether `size` agrees with the data is `hasConsistentSize`.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= Self.headerSize else { return nil }
        var r = ByteReader(bytes)
        self.init(offset: r.u32(), size: r.u32(), flags: r.u32(), data: r.rest())
    }

    /// `size` is at most `maxSize` and exactly the number of data bytes.
    public var hasConsistentSize: Bool { size <= UInt32(Self.maxSize) && data.count == Int(size) }

    public var bytes: [UInt8] { ByteWriter().u32(offset).u32(size).u32(flags).raw(data).bytes }
}

/// VhostUserShared: `{unsigned char uuid[16]}`, the payload of BACKEND_SHARED_OBJECT_ADD/REMOVE/
/// LOOKUP and of GET_SHARED_OBJECT (whose reply, in libvhost-user, echoes it with the fd attached
/// on success and no fd otherwise).
public struct SharedObjectPayload: VhostUserPayload {
    public static let size = 16
    /// All zeros: what a reply echoes when the request carried no valid UUID.
    public static let zero = SharedObjectPayload(validUUID: [UInt8](repeating: 0, count: size))
    public var uuid: [UInt8]
    public init?(uuid: [UInt8]) {
        guard uuid.count == Self.size else { return nil }
        self.uuid = uuid
    }
    private init(validUUID: [UInt8]) { uuid = validUUID }
    public init(reading r: inout ByteReader) { uuid = r.take(Self.size) }
    public func write(_ w: ByteWriter) { w.raw(uuid) }
}

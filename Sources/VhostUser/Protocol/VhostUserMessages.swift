/// vhost-user wire protocol (QEMU docs/interop/vhost-user.rst): data only, no I/O.

/// Front-end → back-end requests. Raw values are the spec's.
public enum VhostUserRequest: UInt32, Sendable, CaseIterable {
    case getFeatures = 1, setFeatures = 2, setOwner = 3, resetOwner = 4, setMemTable = 5, setLogBase = 6,
         setLogFD = 7, setVringNum = 8, setVringAddr = 9, setVringBase = 10, getVringBase = 11,
         setVringKick = 12, setVringCall = 13, setVringErr = 14, getProtocolFeatures = 15,
         setProtocolFeatures = 16, getQueueNum = 17, setVringEnable = 18, sendRARP = 19, netSetMTU = 20,
         setBackendReqFD = 21, iotlbMsg = 22, setVringEndian = 23, getConfig = 24, setConfig = 25,
         createCryptoSession = 26, closeCryptoSession = 27, postcopyAdvise = 28, postcopyListen = 29,
         postcopyEnd = 30, getInflightFD = 31, setInflightFD = 32, gpuSetSocket = 33, resetDevice = 34,
         vringKick = 35, getMaxMemSlots = 36, addMemReg = 37, remMemReg = 38, setStatus = 39,
         getStatus = 40, getSharedObject = 41, setDeviceStateFD = 42, checkDeviceState = 43

    /// Spec name, for logs.
    public var name: String { "VHOST_USER_" + String(describing: self).snakeUpper }
}

extension String {
    var snakeUpper: String {
        var out = ""
        var previousLower = false
        for c in self {
            if c.isUppercase && previousLower { out += "_" }
            previousLower = c.isLowercase
            out += c.uppercased()
        }
        return out
    }
}

/// Back-end → front-end requests on the backend channel (SET_BACKEND_REQ_FD). Raw values are the spec's.
public enum VhostUserBackendRequest: UInt32, Sendable, CaseIterable {
    case iotlbMsg = 1, configChangeMsg = 2, vringHostNotifierMsg = 3
    /// QEMU >= 8.2, protocol feature SHARED_OBJECT: payload `VhostUserShared` (16-byte UUID).
    case sharedObjectAdd = 6, sharedObjectRemove = 7, sharedObjectLookup = 8

    public var name: String { "VHOST_USER_BACKEND_" + String(describing: self).snakeUpper }
}

/// VhostUserShared: `{unsigned char uuid[16]}`, the payload of BACKEND_SHARED_OBJECT_ADD/REMOVE/
/// LOOKUP and of GET_SHARED_OBJECT (whose reply, in libvhost-user, echoes it with the fd attached
/// on success and no fd otherwise).
public struct SharedObjectPayload: Equatable, Sendable {
    public static let size = 16
    public var uuid: [UInt8]
    public init?(uuid: [UInt8]) {
        guard uuid.count == Self.size else { return nil }
        self.uuid = uuid
    }
    public var bytes: [UInt8] { uuid }
}

/// Header flags (version in bits 0-1).
public enum VhostUserHeaderFlags {
    public static let version: UInt32 = 0x1
    public static let reply: UInt32 = 0x4
    public static let needReply: UInt32 = 0x8
    public static let versionMask: UInt32 = 0x3
}

/// The 12-byte message header.
public struct VhostUserHeader: Equatable, Sendable {
    public static let size = 12
    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request; self.flags = flags; self.size = size
    }

    public init(bytes: UnsafeRawBufferPointer) {
        request = bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
        flags = bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        size = bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    }

    public var bytes: [UInt8] { WireWriter().u32(request).u32(flags).u32(size).bytes }
    public var needsReply: Bool { flags & VhostUserHeaderFlags.needReply != 0 }
}

/// Protocol feature bits (VHOST_USER_PROTOCOL_F_*).
public struct VhostUserProtocolFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let mq = Self(rawValue: 1 << 0)
    public static let logShmFD = Self(rawValue: 1 << 1)
    public static let replyAck = Self(rawValue: 1 << 3)
    public static let backendReq = Self(rawValue: 1 << 5)
    public static let config = Self(rawValue: 1 << 9)
    public static let backendSendFD = Self(rawValue: 1 << 10)
    public static let resetDevice = Self(rawValue: 1 << 13)
    public static let inbandNotifications = Self(rawValue: 1 << 14)
    public static let configureMemSlots = Self(rawValue: 1 << 15)
    public static let status = Self(rawValue: 1 << 16)
    public static let sharedObject = Self(rawValue: 1 << 18)
}

/// Transport feature bits a vhost-user backend offers alongside its device bits.
public enum VirtioFeature {
    public static let ringIndirectDesc: UInt64 = 1 << 28
    public static let ringEventIdx: UInt64 = 1 << 29
    /// VHOST_USER_F_PROTOCOL_FEATURES (bit 30): protocol features are negotiated.
    public static let protocolFeatures: UInt64 = 1 << 30
    public static let version1: UInt64 = 1 << 32
}

/// Why a message was refused. The connection goes on unless `isFatal`.
public enum VhostUserMessageError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownRequest(UInt32)
    case badSize(request: String, got: Int, expected: String)
    case badFDCount(request: String, got: Int, expected: Int)
    case invalidPayload(request: String, String)
    case unsupported(request: String)
    case failed(request: String, String)

    public var description: String {
        switch self {
        case let .unknownRequest(r): "unknown request \(r)"
        case let .badSize(r, g, e): "\(r): payload of \(g) bytes, expected \(e)"
        case let .badFDCount(r, g, e): "\(r): \(g) fds, expected \(e)"
        case let .invalidPayload(r, why): "\(r): \(why)"
        case let .unsupported(r): "\(r): not supported by this backend"
        case let .failed(r, why): "\(r) failed: \(why)"
        }
    }
}

// MARK: payloads

/// VhostUserVringState: `{u32 index, u32 num}`.
public struct VringState: Equatable, Sendable {
    public static let size = 8
    public var index: UInt32, num: UInt32
    public init(index: UInt32, num: UInt32) { self.index = index; self.num = num }
    public init(_ p: WireReader) { index = p.u32(0); num = p.u32(4) }
    public var bytes: [UInt8] { WireWriter().u32(index).u32(num).bytes }
}

/// VhostUserVringAddr: `{u32 index, u32 flags, u64 desc, u64 used, u64 avail, u64 log}`.
public struct VringAddressPayload: Equatable, Sendable {
    public static let size = 40
    public var index: UInt32, flags: UInt32, descriptor: UInt64, used: UInt64, available: UInt64, log: UInt64
    public init(index: UInt32, flags: UInt32 = 0, descriptor: UInt64, used: UInt64, available: UInt64, log: UInt64 = 0) {
        self.index = index; self.flags = flags; self.descriptor = descriptor; self.used = used; self.available = available; self.log = log
    }
    public init(_ p: WireReader) {
        index = p.u32(0); flags = p.u32(4); descriptor = p.u64(8); used = p.u64(16); available = p.u64(24); log = p.u64(32)
    }
    public var bytes: [UInt8] { WireWriter().u32(index).u32(flags).u64(descriptor).u64(used).u64(available).u64(log).bytes }
}

/// VhostUserMemoryRegion: `{u64 guest_phys_addr, u64 memory_size, u64 userspace_addr, u64 mmap_offset}`.
public struct MemoryRegionPayload: Equatable, Sendable {
    public static let size = 32
    public var guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64
    public init(guestAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestAddress = guestAddress; self.size = size; self.userAddress = userAddress; self.mmapOffset = mmapOffset
    }
    public init(_ p: WireReader, at o: Int) {
        guestAddress = p.u64(o); size = p.u64(o + 8); userAddress = p.u64(o + 16); mmapOffset = p.u64(o + 24)
    }
    func write(_ w: WireWriter) -> WireWriter { w.u64(guestAddress).u64(size).u64(userAddress).u64(mmapOffset) }
}

/// SET_MEM_TABLE payload: `{u32 nregions, u32 padding, regions[nregions]}` (one fd per region).
public struct MemoryTablePayload: Equatable, Sendable {
    /// VHOST_MEMORY_BASELINE_NREGIONS.
    public static let maxRegions = 8
    public var regions: [MemoryRegionPayload]
    public init(regions: [MemoryRegionPayload]) { self.regions = regions }
    public var bytes: [UInt8] {
        var w = WireWriter().u32(UInt32(regions.count)).u32(0)
        for r in regions { w = r.write(w) }
        return w.bytes
    }
}

/// ADD_MEM_REG / REM_MEM_REG payload: `{u64 padding, region}`.
public struct SingleMemoryRegionPayload: Equatable, Sendable {
    public static let size = 40
    public var region: MemoryRegionPayload
    public init(region: MemoryRegionPayload) { self.region = region }
    public var bytes: [UInt8] { region.write(WireWriter().u64(0)).bytes }
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
    public var bytes: [UInt8] { WireWriter().u32(offset).u32(size).u32(flags).raw(data).bytes }
}

/// Vring index in the low byte of a KICK/CALL/ERR u64; bit 8 says "no fd" (polling mode).
public enum VringFDPayload {
    public static let indexMask: UInt64 = 0xff
    public static let noFD: UInt64 = 1 << 8
}

// MARK: byte helpers

/// Little-endian reads from a received payload (bounds were checked by the caller).
public struct WireReader {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public func u32(_ o: Int) -> UInt32 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt32.self) } }
    public func u64(_ o: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: o, as: UInt64.self) } }
}

/// Little-endian message building (control path only; not used per frame).
public final class WireWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    @discardableResult public func u32(_ v: UInt32) -> WireWriter { withUnsafeBytes(of: v.littleEndian) { bytes += $0 }; return self }
    @discardableResult public func u64(_ v: UInt64) -> WireWriter { withUnsafeBytes(of: v.littleEndian) { bytes += $0 }; return self }
    @discardableResult public func raw(_ v: [UInt8]) -> WireWriter { bytes += v; return self }
}

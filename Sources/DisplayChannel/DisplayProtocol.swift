// The vhost-user-gpu display protocol (QEMU docs/interop/vhost-user-gpu.rst), as data only:
// request codes, header, payloads, their exact byte layouts, encoding and decoding.
// No syscalls here. Numbers are in machine native byte order (spec "Wire format"); this
// project only runs on little-endian hosts, like QEMU's own backend, which never swaps.
//
// Facts checked against QEMU 10's frontend (hw/display/vhost-user-gpu.c) and its C backend
// (contrib/vhost-user-gpu/): all payload structs are QEMU_PACKED; replies carry the request
// code of the request they answer and flags == VHOST_USER_GPU_MSG_FLAG_REPLY (0x4).

/// A request code (`VhostUserGpuRequest`). Sent by the backend; QEMU's replies echo it.
public enum DisplayRequest: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// `VHOST_USER_GPU_GET_PROTOCOL_FEATURES`: no payload; reply `u64` feature bits.
    case getProtocolFeatures = 1
    /// `VHOST_USER_GPU_SET_PROTOCOL_FEATURES`: `u64` feature bits; no reply.
    case setProtocolFeatures = 2
    /// `VHOST_USER_GPU_GET_DISPLAY_INFO`: no payload; reply `struct virtio_gpu_resp_display_info`.
    case getDisplayInfo = 3
    /// `VHOST_USER_GPU_CURSOR_POS`: `VhostUserGpuCursorPos`; no reply. Shows the cursor there.
    case cursorPos = 4
    /// `VHOST_USER_GPU_CURSOR_POS_HIDE`: `VhostUserGpuCursorPos`; no reply. Hides the cursor.
    case cursorPosHide = 5
    /// `VHOST_USER_GPU_CURSOR_UPDATE`: `VhostUserGpuCursorUpdate` (64x64 pixels); no reply.
    case cursorUpdate = 6
    /// `VHOST_USER_GPU_SCANOUT`: `VhostUserGpuScanout`; no reply. 0x0 disables the scanout.
    case scanout = 7
    /// `VHOST_USER_GPU_UPDATE`: `VhostUserGpuUpdate` followed by `width*height*4` bytes of
    /// PIXMAN_x8r8g8b8 pixels, rows packed (stride `width*4`); no reply.
    case update = 8
    /// `VHOST_USER_GPU_DMABUF_SCANOUT`: `VhostUserGpuDMABUFScanout` plus the dmabuf fd as
    /// SCM_RIGHTS ancillary data (no fd: disable); no reply.
    case dmabufScanout = 9
    /// `VHOST_USER_GPU_DMABUF_UPDATE`: `VhostUserGpuUpdate` without pixel data; QEMU replies
    /// with an empty payload once the display has flushed (or at once on an error).
    case dmabufUpdate = 10
    /// `VHOST_USER_GPU_GET_EDID`: `VhostUserGpuEdidRequest`; reply `struct virtio_gpu_resp_edid`.
    /// Needs protocol feature EDID. QEMU sends NO reply for a scanout id >= max_outputs.
    case getEDID = 11
    /// `VHOST_USER_GPU_DMABUF_SCANOUT2`: `VhostUserGpuDMABUFScanout2` (adds the modifier) plus
    /// the fd. Needs protocol feature DMABUF2; no reply.
    case dmabufScanout2 = 12

    /// The spec's name, for logs.
    public var name: String {
        switch self {
        case .getProtocolFeatures: "GET_PROTOCOL_FEATURES"
        case .setProtocolFeatures: "SET_PROTOCOL_FEATURES"
        case .getDisplayInfo: "GET_DISPLAY_INFO"
        case .cursorPos: "CURSOR_POS"
        case .cursorPosHide: "CURSOR_POS_HIDE"
        case .cursorUpdate: "CURSOR_UPDATE"
        case .scanout: "SCANOUT"
        case .update: "UPDATE"
        case .dmabufScanout: "DMABUF_SCANOUT"
        case .dmabufUpdate: "DMABUF_UPDATE"
        case .getEDID: "GET_EDID"
        case .dmabufScanout2: "DMABUF_SCANOUT2"
        }
    }

    public var description: String { name }

    /// The payload size a request must have.
    public var requestPayloadSize: DisplayPayloadSize {
        switch self {
        case .getProtocolFeatures, .getDisplayInfo: .exact(0)
        case .setProtocolFeatures: .exact(8)
        case .cursorPos, .cursorPosHide: .exact(DisplayCursorPos.byteCount)
        case .cursorUpdate: .exact(DisplayCursorUpdate.byteCount)
        case .scanout: .exact(DisplayScanout.byteCount)
        case .update: .update
        case .dmabufScanout: .exact(DisplayDMABUFScanout.byteCount)
        case .dmabufUpdate: .exact(DisplayUpdateHeader.byteCount)
        case .getEDID: .exact(DisplayEDIDRequest.byteCount)
        case .dmabufScanout2: .exact(DisplayDMABUFScanout2.byteCount)
        }
    }

    /// The payload size of QEMU's reply, or nil when QEMU does not reply to this request.
    public var replyPayloadSize: Int? {
        switch self {
        case .getProtocolFeatures: 8
        case .getDisplayInfo: DisplayInfoReply.byteCount
        case .getEDID: DisplayEDIDReply.byteCount
        case .dmabufUpdate: 0
        default: nil
        }
    }
}

/// How large a request's payload must be.
public enum DisplayPayloadSize: Sendable, Equatable {
    /// Exactly this many bytes.
    case exact(Int)
    /// `VhostUserGpuUpdate`: 20 bytes of header, then exactly `width*height*4` pixel bytes.
    case update
}

/// Header flags (`VhostUserGpuMsg.flags`).
public struct DisplayMessageFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Bit 2, `VHOST_USER_GPU_MSG_FLAG_REPLY` (0x4): set on every reply. Requests carry 0.
    public static let reply = DisplayMessageFlags(rawValue: 0x4)
}

/// Protocol feature bits exchanged with GET/SET_PROTOCOL_FEATURES.
public struct DisplayProtocolFeatures: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// `VHOST_USER_GPU_PROTOCOL_F_EDID` (bit 0): GET_EDID is answered.
    public static let edid = DisplayProtocolFeatures(rawValue: 1 << 0)
    /// `VHOST_USER_GPU_PROTOCOL_F_DMABUF2` (bit 1): DMABUF_SCANOUT2 (with modifier) is understood.
    public static let dmabuf2 = DisplayProtocolFeatures(rawValue: 1 << 1)

    public var description: String {
        var names: [String] = []
        if contains(.edid) { names.append("EDID") }
        if contains(.dmabuf2) { names.append("DMABUF2") }
        let unknown = rawValue & ~(DisplayProtocolFeatures.edid.rawValue | DisplayProtocolFeatures.dmabuf2.rawValue)
        if unknown != 0 { names.append("0x" + String(unknown, radix: 16)) }
        return "[" + names.joined(separator: ",") + "]"
    }
}

/// Why bytes are not a valid display message.
public enum DisplayProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A payload does not have the size its type requires.
    case wrongSize(what: String, expected: Int, actual: Int)
    /// A header announces more payload than the reader accepts.
    case payloadTooLarge(size: UInt32, limit: Int)
    /// A request code outside the spec.
    case unknownRequest(UInt32)
    /// A message that should be a reply lacks the reply flag (or a request carries it).
    case badFlags(request: UInt32, flags: UInt32)
    /// An UPDATE whose size is not 20 + width*height*4.
    case badUpdateSize(width: UInt32, height: UInt32, size: UInt32)

    public var description: String {
        switch self {
        case let .wrongSize(what, expected, actual): "\(what): payload is \(actual) bytes, expected \(expected)"
        case let .payloadTooLarge(size, limit): "payload of \(size) bytes exceeds the limit of \(limit)"
        case let .unknownRequest(code): "unknown request \(code)"
        case let .badFlags(request, flags): "request \(request): unexpected flags 0x\(String(flags, radix: 16))"
        case let .badUpdateSize(w, h, size): "UPDATE \(w)x\(h) with payload size \(size)"
        }
    }
}

// MARK: byte access

/// Appends native-endian fields to a byte array.
public struct DisplayByteWriter: Sendable {
    public private(set) var bytes: [UInt8]
    public init(capacity: Int = 0) { bytes = []; bytes.reserveCapacity(capacity) }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    public mutating func i32(_ v: Int32) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
    public mutating func zeros(_ count: Int) { bytes.append(contentsOf: repeatElement(0, count: count)) }
}

/// Reads native-endian fields; callers check the total size first (the reader traps on overrun,
/// which is an internal invariant, never input-dependent).
public struct DisplayByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    public init(_ bytes: [UInt8], offset: Int = 0) { self.bytes = bytes; self.offset = offset }
    public mutating func u32() -> UInt32 {
        precondition(offset + 4 <= bytes.count)
        var v: UInt32 = 0
        // Safety: bounds checked above; copies 4 bytes into a local.
        withUnsafeMutableBytes(of: &v) { dst in bytes.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + 4])) } }
        offset += 4
        return v
    }
    public mutating func i32() -> Int32 { Int32(bitPattern: u32()) }
    public mutating func u64() -> UInt64 {
        precondition(offset + 8 <= bytes.count)
        var v: UInt64 = 0
        // Safety: bounds checked above; copies 8 bytes into a local.
        withUnsafeMutableBytes(of: &v) { dst in bytes.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + 8])) } }
        offset += 8
        return v
    }
    public mutating func take(_ count: Int) -> [UInt8] {
        precondition(offset + count <= bytes.count)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
    public mutating func skip(_ count: Int) { precondition(offset + count <= bytes.count); offset += count }
}

/// A fixed-size payload struct.
public protocol DisplayPayload: Sendable, Equatable {
    /// Its size on the wire (the packed C struct's size).
    static var byteCount: Int { get }
    /// A name for errors and logs (the spec's struct name).
    static var specName: String { get }
    /// Decodes exactly `byteCount` bytes.
    init(decoding bytes: [UInt8]) throws(DisplayProtocolError)
    func encode(into writer: inout DisplayByteWriter)
}

extension DisplayPayload {
    /// The payload's bytes.
    public func encoded() -> [UInt8] {
        var w = DisplayByteWriter(capacity: Self.byteCount)
        encode(into: &w)
        return w.bytes
    }

    static func checkSize(_ bytes: [UInt8]) throws(DisplayProtocolError) {
        guard bytes.count == byteCount else {
            throw .wrongSize(what: specName, expected: byteCount, actual: bytes.count)
        }
    }
}

// MARK: header

/// `VhostUserGpuMsg` header: `u32 request, u32 flags, u32 size` (size of the following payload).
public struct DisplayMessageHeader: Sendable, Equatable {
    public static let byteCount = 12
    /// The raw request code (may be outside `DisplayRequest` when decoding garbage).
    public var request: UInt32
    public var flags: DisplayMessageFlags
    public var size: UInt32

    public init(request: UInt32, flags: DisplayMessageFlags = [], size: UInt32) {
        self.request = request; self.flags = flags; self.size = size
    }
    public init(_ request: DisplayRequest, flags: DisplayMessageFlags = [], size: UInt32) {
        self.init(request: request.rawValue, flags: flags, size: size)
    }

    public var knownRequest: DisplayRequest? { DisplayRequest(rawValue: request) }

    public func encode(into writer: inout DisplayByteWriter) {
        writer.u32(request); writer.u32(flags.rawValue); writer.u32(size)
    }

    /// Writes the 12 header bytes at `p`.
    public func store(to p: UnsafeMutableRawPointer) {
        // Safety: callers pass at least 12 writable bytes; unaligned stores are allowed.
        p.storeBytes(of: request, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: flags.rawValue, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: size, toByteOffset: 8, as: UInt32.self)
    }

    /// Reads a header from 12 bytes at `p`.
    public init(loading p: UnsafeRawPointer) {
        // Safety: callers pass at least 12 readable bytes.
        request = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
        flags = DisplayMessageFlags(rawValue: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        size = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    }

    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        guard bytes.count == Self.byteCount else {
            throw .wrongSize(what: "VhostUserGpuMsg header", expected: Self.byteCount, actual: bytes.count)
        }
        self = bytes.withUnsafeBytes { DisplayMessageHeader(loading: $0.baseAddress!) }
    }
}

// MARK: payloads

/// `VhostUserGpuCursorPos` {scanout_id, x, y} (CURSOR_POS, CURSOR_POS_HIDE).
public struct DisplayCursorPos: DisplayPayload {
    public static let byteCount = 12
    public static let specName = "VhostUserGpuCursorPos"
    public var scanoutID: UInt32, x: UInt32, y: UInt32
    public init(scanoutID: UInt32, x: UInt32, y: UInt32) { self.scanoutID = scanoutID; self.x = x; self.y = y }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        self.init(scanoutID: r.u32(), x: r.u32(), y: r.u32())
    }
    public func encode(into w: inout DisplayByteWriter) { w.u32(scanoutID); w.u32(x); w.u32(y) }
    /// Writes the 12 bytes at `p`.
    public func store(to p: UnsafeMutableRawPointer) {
        // Safety: callers pass at least 12 writable bytes.
        p.storeBytes(of: scanoutID, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: x, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: y, toByteOffset: 8, as: UInt32.self)
    }
}

/// `VhostUserGpuCursorUpdate` {pos, hot_x, hot_y, u32 data[64*64]} (CURSOR_UPDATE).
///
/// QEMU copies `data` straight into a `QEMUCursor` (`cursor_alloc(64, 64)`), whose pixels are
/// native-endian `uint32_t` ARGB (0xAARRGGBB, PIXMAN_a8r8g8b8): bytes B,G,R,A on little-endian.
/// Alpha matters here (0 is transparent), unlike UPDATE's x8r8g8b8.
public struct DisplayCursorUpdate: DisplayPayload {
    public static let side = 64
    public static let pixelBytes = 64 * 64 * 4
    /// Bytes before the pixel data: pos (12) + hot_x + hot_y.
    public static let headerByteCount = 20
    public static let byteCount = headerByteCount + pixelBytes
    public static let specName = "VhostUserGpuCursorUpdate"
    public var pos: DisplayCursorPos
    public var hotX: UInt32, hotY: UInt32
    /// 64*64*4 bytes, ARGB8888 native-endian words.
    public var pixels: [UInt8]

    public init(pos: DisplayCursorPos, hotX: UInt32, hotY: UInt32, pixels: [UInt8]) {
        precondition(pixels.count == Self.pixelBytes, "cursor image must be 64x64x4 bytes")
        self.pos = pos; self.hotX = hotX; self.hotY = hotY; self.pixels = pixels
    }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        let pos = DisplayCursorPos(scanoutID: r.u32(), x: r.u32(), y: r.u32())
        self.init(pos: pos, hotX: r.u32(), hotY: r.u32(), pixels: r.take(Self.pixelBytes))
    }
    public func encode(into w: inout DisplayByteWriter) {
        pos.encode(into: &w); w.u32(hotX); w.u32(hotY); w.raw(pixels)
    }
}

/// `VhostUserGpuScanout` {scanout_id, width, height} (SCANOUT). 0x0 disables the scanout.
public struct DisplayScanout: DisplayPayload {
    public static let byteCount = 12
    public static let specName = "VhostUserGpuScanout"
    public var scanoutID: UInt32, width: UInt32, height: UInt32
    public init(scanoutID: UInt32, width: UInt32, height: UInt32) {
        self.scanoutID = scanoutID; self.width = width; self.height = height
    }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        self.init(scanoutID: r.u32(), width: r.u32(), height: r.u32())
    }
    public func encode(into w: inout DisplayByteWriter) { w.u32(scanoutID); w.u32(width); w.u32(height) }
    /// Writes the 12 bytes at `p`.
    public func store(to p: UnsafeMutableRawPointer) {
        // Safety: callers pass at least 12 writable bytes.
        p.storeBytes(of: scanoutID, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: width, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: height, toByteOffset: 8, as: UInt32.self)
    }
}

/// `VhostUserGpuUpdate` without its data: {scanout_id, x, y, width, height}. The UPDATE payload
/// is this followed by `width*height*4` bytes; DMABUF_UPDATE's payload is this alone.
public struct DisplayUpdateHeader: DisplayPayload {
    public static let byteCount = 20
    public static let specName = "VhostUserGpuUpdate"
    public var scanoutID: UInt32, x: UInt32, y: UInt32, width: UInt32, height: UInt32
    public init(scanoutID: UInt32, x: UInt32, y: UInt32, width: UInt32, height: UInt32) {
        self.scanoutID = scanoutID; self.x = x; self.y = y; self.width = width; self.height = height
    }
    public init(scanoutID: UInt32, rect: PixelRect) {
        self.init(scanoutID: scanoutID, x: rect.x, y: rect.y, width: rect.width, height: rect.height)
    }
    public var rect: PixelRect { PixelRect(x: x, y: y, width: width, height: height) }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        self.init(scanoutID: r.u32(), x: r.u32(), y: r.u32(), width: r.u32(), height: r.u32())
    }
    public func encode(into w: inout DisplayByteWriter) {
        w.u32(scanoutID); w.u32(x); w.u32(y); w.u32(width); w.u32(height)
    }
    /// Writes the 20 bytes at `p`.
    public func store(to p: UnsafeMutableRawPointer) {
        // Safety: callers pass at least 20 writable bytes.
        p.storeBytes(of: scanoutID, toByteOffset: 0, as: UInt32.self)
        p.storeBytes(of: x, toByteOffset: 4, as: UInt32.self)
        p.storeBytes(of: y, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: width, toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: height, toByteOffset: 16, as: UInt32.self)
    }

    /// The UPDATE payload size for this rect: 20 + width*height*4, or nil if it does not fit the
    /// header's u32 size field.
    public var updatePayloadSize: UInt32? {
        let pixels = UInt64(width) * UInt64(height) * 4
        let total = pixels + UInt64(Self.byteCount)
        return total <= UInt64(UInt32.max) ? UInt32(total) : nil
    }
}

/// `VhostUserGpuDMABUFScanout` {scanout_id, x, y, width, height, fd_width, fd_height,
/// fd_stride, fd_flags, int fd_drm_fourcc} (DMABUF_SCANOUT). QEMU reads only
/// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP` (bit 0) from `fd_flags`.
public struct DisplayDMABUFScanout: DisplayPayload {
    public static let byteCount = 40
    public static let specName = "VhostUserGpuDMABUFScanout"
    public var scanoutID: UInt32, x: UInt32, y: UInt32, width: UInt32, height: UInt32
    public var fdWidth: UInt32, fdHeight: UInt32, fdStride: UInt32, fdFlags: UInt32
    public var fourcc: Int32
    public init(scanoutID: UInt32, x: UInt32 = 0, y: UInt32 = 0, width: UInt32, height: UInt32,
                fdWidth: UInt32, fdHeight: UInt32, fdStride: UInt32, fdFlags: UInt32 = 0, fourcc: Int32) {
        self.scanoutID = scanoutID; self.x = x; self.y = y; self.width = width; self.height = height
        self.fdWidth = fdWidth; self.fdHeight = fdHeight; self.fdStride = fdStride; self.fdFlags = fdFlags
        self.fourcc = fourcc
    }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        self.init(scanoutID: r.u32(), x: r.u32(), y: r.u32(), width: r.u32(), height: r.u32(),
                  fdWidth: r.u32(), fdHeight: r.u32(), fdStride: r.u32(), fdFlags: r.u32(), fourcc: r.i32())
    }
    /// The payload for showing `rect` of `buffer` on scanout `scanoutID` (the modifier is not
    /// part of it; see `DisplayDMABUFScanout2`).
    public init(scanoutID: UInt32, rect: PixelRect, buffer: DisplayDMABUF) {
        self.init(scanoutID: scanoutID, x: rect.x, y: rect.y, width: rect.width, height: rect.height,
                  fdWidth: buffer.width, fdHeight: buffer.height, fdStride: buffer.stride,
                  fdFlags: buffer.flags.rawValue, fourcc: Int32(bitPattern: buffer.fourcc))
    }
    public func encode(into w: inout DisplayByteWriter) {
        w.u32(scanoutID); w.u32(x); w.u32(y); w.u32(width); w.u32(height)
        w.u32(fdWidth); w.u32(fdHeight); w.u32(fdStride); w.u32(fdFlags); w.i32(fourcc)
    }
    /// Writes the 40 bytes at `p`.
    public func store(to p: UnsafeMutableRawPointer) {
        // Safety: callers pass at least 40 writable bytes; unaligned stores are allowed.
        let fields = (scanoutID, x, y, width, height, fdWidth, fdHeight, fdStride, fdFlags, UInt32(bitPattern: fourcc))
        withUnsafeBytes(of: fields) { p.copyMemory(from: $0.baseAddress!, byteCount: Self.byteCount) }
    }
    /// The scanout rect within the buffer.
    public var rect: PixelRect { PixelRect(x: x, y: y, width: width, height: height) }
}

/// `VhostUserGpuDMABUFScanout2` {dmabuf_scanout, u64 modifier} (DMABUF_SCANOUT2).
public struct DisplayDMABUFScanout2: DisplayPayload {
    public static let byteCount = 48
    public static let specName = "VhostUserGpuDMABUFScanout2"
    public var scanout: DisplayDMABUFScanout
    public var modifier: UInt64
    public init(scanout: DisplayDMABUFScanout, modifier: UInt64) { self.scanout = scanout; self.modifier = modifier }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        let base = try DisplayDMABUFScanout(decoding: Array(bytes[0..<DisplayDMABUFScanout.byteCount]))
        var r = DisplayByteReader(bytes, offset: DisplayDMABUFScanout.byteCount)
        self.init(scanout: base, modifier: r.u64())
    }
    public func encode(into w: inout DisplayByteWriter) { scanout.encode(into: &w); w.u64(modifier) }
    /// Writes the 48 bytes at `p` (the modifier unaligned at offset 40, as in the packed struct).
    public func store(to p: UnsafeMutableRawPointer) {
        // Safety: callers pass at least 48 writable bytes.
        scanout.store(to: p)
        p.storeBytes(of: modifier, toByteOffset: DisplayDMABUFScanout.byteCount, as: UInt64.self)
    }
}

/// `VhostUserGpuEdidRequest` {scanout_id} (GET_EDID).
public struct DisplayEDIDRequest: DisplayPayload {
    public static let byteCount = 4
    public static let specName = "VhostUserGpuEdidRequest"
    public var scanoutID: UInt32
    public init(scanoutID: UInt32) { self.scanoutID = scanoutID }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        self.init(scanoutID: r.u32())
    }
    public func encode(into w: inout DisplayByteWriter) { w.u32(scanoutID) }
}

/// `u64` feature bits (GET_PROTOCOL_FEATURES reply, SET_PROTOCOL_FEATURES request).
public struct DisplayFeaturesPayload: DisplayPayload {
    public static let byteCount = 8
    public static let specName = "u64 protocol features"
    public var features: DisplayProtocolFeatures
    public init(_ features: DisplayProtocolFeatures) { self.features = features }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        self.init(DisplayProtocolFeatures(rawValue: r.u64()))
    }
    public func encode(into w: inout DisplayByteWriter) { w.u64(features.rawValue) }
}

/// `struct virtio_gpu_ctrl_hdr` (24 bytes) as it starts the display info and EDID replies.
/// QEMU fills only `type`; the rest is zero.
public enum DisplayCtrlHeader {
    public static let byteCount = 24
    /// `VIRTIO_GPU_RESP_OK_DISPLAY_INFO`.
    public static let okDisplayInfo: UInt32 = 0x1101
    /// `VIRTIO_GPU_RESP_OK_EDID`.
    public static let okEDID: UInt32 = 0x1104
}

/// `struct virtio_gpu_resp_display_info` (GET_DISPLAY_INFO reply): ctrl header + 16 ×
/// `virtio_gpu_display_one` {rect x, y, width, height, enabled, flags} = 408 bytes.
public struct DisplayInfoReply: DisplayPayload {
    /// `VIRTIO_GPU_MAX_SCANOUTS`.
    public static let maxScanouts = 16
    public static let byteCount = DisplayCtrlHeader.byteCount + maxScanouts * 24
    public static let specName = "virtio_gpu_resp_display_info"
    /// `hdr.type`; QEMU sends `VIRTIO_GPU_RESP_OK_DISPLAY_INFO`.
    public var type: UInt32
    /// Exactly 16 modes after decoding; encoding pads with zeroed (disabled) modes.
    public var modes: [DisplayMode]

    public init(type: UInt32 = DisplayCtrlHeader.okDisplayInfo, modes: [DisplayMode]) {
        precondition(modes.count <= Self.maxScanouts)
        self.type = type; self.modes = modes
    }
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        let type = r.u32()
        r.skip(DisplayCtrlHeader.byteCount - 4)
        var modes: [DisplayMode] = []
        modes.reserveCapacity(Self.maxScanouts)
        for _ in 0..<Self.maxScanouts {
            let rect = PixelRect(x: r.u32(), y: r.u32(), width: r.u32(), height: r.u32())
            let enabled = r.u32()
            let flags = r.u32()
            modes.append(DisplayMode(rect: rect, enabled: enabled != 0, flags: flags))
        }
        self.init(type: type, modes: modes)
    }
    public func encode(into w: inout DisplayByteWriter) {
        w.u32(type)
        w.zeros(DisplayCtrlHeader.byteCount - 4)
        for i in 0..<Self.maxScanouts {
            if i < modes.count {
                let m = modes[i]
                w.u32(m.rect.x); w.u32(m.rect.y); w.u32(m.rect.width); w.u32(m.rect.height)
                w.u32(m.enabled ? 1 : 0); w.u32(m.flags)
            } else {
                w.zeros(24)
            }
        }
    }
}

/// `struct virtio_gpu_resp_edid` (GET_EDID reply): ctrl header, `u32 size`, `u32 padding`,
/// `u8 edid[1024]` = 1056 bytes. QEMU 10 always sets `size` to 1024 (the whole array, the
/// generated EDID zero-padded).
public struct DisplayEDIDReply: DisplayPayload {
    public static let edidCapacity = 1024
    public static let byteCount = DisplayCtrlHeader.byteCount + 8 + edidCapacity
    public static let specName = "virtio_gpu_resp_edid"
    /// `hdr.type`; QEMU sends `VIRTIO_GPU_RESP_OK_EDID`.
    public var type: UInt32
    /// The `size` field as sent (may be garbage; see `blob`).
    public var size: UInt32
    /// Always 1024 bytes.
    public var edid: [UInt8]

    /// A reply carrying `blob` (at most 1024 bytes; `size` = its count).
    public init(type: UInt32 = DisplayCtrlHeader.okEDID, blob: [UInt8]) {
        precondition(blob.count <= Self.edidCapacity)
        self.type = type
        self.size = UInt32(blob.count)
        self.edid = blob + [UInt8](repeating: 0, count: Self.edidCapacity - blob.count)
    }
    init(type: UInt32, size: UInt32, edid: [UInt8]) { self.type = type; self.size = size; self.edid = edid }

    /// The first `size` bytes, or nil if `size` exceeds the array.
    public var blob: [UInt8]? {
        guard size <= UInt32(Self.edidCapacity) else { return nil }
        return Array(edid[0..<Int(size)])
    }

    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        let type = r.u32()
        r.skip(DisplayCtrlHeader.byteCount - 4)
        let size = r.u32()
        r.skip(4)
        self.init(type: type, size: size, edid: r.take(Self.edidCapacity))
    }
    public func encode(into w: inout DisplayByteWriter) {
        w.u32(type)
        w.zeros(DisplayCtrlHeader.byteCount - 4)
        w.u32(size); w.u32(0)
        w.raw(edid)
    }
}

// MARK: messages

/// One whole message: header and payload.
public struct DisplayMessage: Sendable, Equatable {
    public var header: DisplayMessageHeader
    /// The payload. For an UPDATE read by a decoder that discards pixels, only the 20-byte
    /// `VhostUserGpuUpdate` header; `discardedPayloadBytes` counts the rest.
    public var payload: [UInt8]
    public var discardedPayloadBytes: Int

    public init(header: DisplayMessageHeader, payload: [UInt8], discardedPayloadBytes: Int = 0) {
        self.header = header; self.payload = payload; self.discardedPayloadBytes = discardedPayloadBytes
    }

    public var request: DisplayRequest? { header.knownRequest }
    public var isReply: Bool { header.flags.contains(.reply) }

    /// Encodes a request: header (flags 0, size = payload count) + payload.
    public static func request(_ request: DisplayRequest, payload: [UInt8] = []) -> [UInt8] {
        encode(DisplayMessageHeader(request, size: UInt32(payload.count)), payload)
    }
    public static func request(_ request: DisplayRequest, _ payload: some DisplayPayload) -> [UInt8] {
        self.request(request, payload: payload.encoded())
    }
    /// Encodes a reply as QEMU does: same request code, flags = REPLY (0x4).
    public static func reply(_ request: DisplayRequest, payload: [UInt8] = []) -> [UInt8] {
        encode(DisplayMessageHeader(request, flags: .reply, size: UInt32(payload.count)), payload)
    }
    public static func reply(_ request: DisplayRequest, _ payload: some DisplayPayload) -> [UInt8] {
        reply(request, payload: payload.encoded())
    }
    /// Encodes an UPDATE with `pixels` (packed rows, exactly width*height*4 bytes).
    public static func update(_ header: DisplayUpdateHeader, pixels: [UInt8]) -> [UInt8] {
        precondition(UInt64(pixels.count) == UInt64(header.width) * UInt64(header.height) * 4)
        return request(.update, payload: header.encoded() + pixels)
    }

    static func encode(_ header: DisplayMessageHeader, _ payload: [UInt8]) -> [UInt8] {
        var w = DisplayByteWriter(capacity: DisplayMessageHeader.byteCount + payload.count)
        header.encode(into: &w)
        w.raw(payload)
        return w.bytes
    }

    /// Checks a request (flags, size rules of its code) the way a strict frontend would.
    public func validateAsRequest() throws(DisplayProtocolError) {
        guard let req = request else { throw .unknownRequest(header.request) }
        guard !isReply else { throw .badFlags(request: header.request, flags: header.flags.rawValue) }
        let actual = Int(header.size)
        switch req.requestPayloadSize {
        case .exact(let n):
            guard actual == n else { throw .wrongSize(what: req.name, expected: n, actual: actual) }
        case .update:
            guard payload.count >= DisplayUpdateHeader.byteCount else {
                throw .wrongSize(what: req.name, expected: DisplayUpdateHeader.byteCount, actual: payload.count)
            }
            let u = try DisplayUpdateHeader(decoding: Array(payload[0..<DisplayUpdateHeader.byteCount]))
            guard let expected = u.updatePayloadSize, expected == header.size else {
                throw .badUpdateSize(width: u.width, height: u.height, size: header.size)
            }
        }
    }

    /// Checks a reply to `expected`: same code, reply flag, exact size.
    public func validateAsReply(to expected: DisplayRequest) throws(DisplayProtocolError) {
        guard let req = request else { throw .unknownRequest(header.request) }
        guard isReply else { throw .badFlags(request: header.request, flags: header.flags.rawValue) }
        let size = req.replyPayloadSize ?? -1
        guard req == expected, Int(header.size) == size else {
            throw .wrongSize(what: "\(req.name) reply", expected: expected.replyPayloadSize ?? 0, actual: Int(header.size))
        }
    }
}

/// An incremental decoder for a byte stream of display messages: feed any split of the bytes,
/// get each whole message once. With `discardUpdatePixels`, UPDATE pixel bytes are counted and
/// dropped as they stream past (never stored), for benchmarks.
public struct DisplayMessageDecoder: Sendable {
    /// Payloads larger than this are a framing error (the size field is garbage).
    public var maxPayloadSize: Int
    public var discardUpdatePixels: Bool

    private var headerBytes: [UInt8] = []
    private var header: DisplayMessageHeader?
    private var payload: [UInt8] = []
    /// Payload bytes still to keep (copied into `payload`).
    private var keepRemaining = 0
    /// Payload bytes still to drop after the kept part.
    private var skipRemaining = 0
    private var skipped = 0

    public init(maxPayloadSize: Int = 256 << 20, discardUpdatePixels: Bool = false) {
        self.maxPayloadSize = maxPayloadSize
        self.discardUpdatePixels = discardUpdatePixels
        headerBytes.reserveCapacity(DisplayMessageHeader.byteCount)
    }

    /// True when no partial message is buffered.
    public var isAtMessageBoundary: Bool { header == nil && headerBytes.isEmpty }

    /// Consumes `bytes`, calling `onMessage` for every message completed. After a thrown error
    /// the stream is out of sync and the decoder must not be fed again.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer,
                              onMessage: (DisplayMessage) -> Void) throws(DisplayProtocolError) {
        var i = 0
        let n = bytes.count
        while true {
            if let h = header {
                if keepRemaining > 0 {
                    let take = min(keepRemaining, n - i)
                    payload.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + take]))
                    i += take; keepRemaining -= take
                    if keepRemaining > 0 { return }
                }
                if skipRemaining > 0 {
                    let take = min(skipRemaining, n - i)
                    i += take; skipRemaining -= take; skipped += take
                    if skipRemaining > 0 { return }
                }
                let message = DisplayMessage(header: h, payload: payload, discardedPayloadBytes: skipped)
                header = nil; payload = []; skipped = 0
                onMessage(message)
                continue
            }
            if i == n { return }
            let take = min(DisplayMessageHeader.byteCount - headerBytes.count, n - i)
            headerBytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + take]))
            i += take
            guard headerBytes.count == DisplayMessageHeader.byteCount else { return }
            let h = headerBytes.withUnsafeBytes { DisplayMessageHeader(loading: $0.baseAddress!) }
            headerBytes.removeAll(keepingCapacity: true)
            let size = Int(h.size)
            if discardUpdatePixels, h.request == DisplayRequest.update.rawValue, !h.flags.contains(.reply) {
                keepRemaining = min(size, DisplayUpdateHeader.byteCount)
                skipRemaining = size - keepRemaining
            } else {
                guard size <= maxPayloadSize else { throw .payloadTooLarge(size: h.size, limit: maxPayloadSize) }
                keepRemaining = size
                skipRemaining = 0
            }
            payload = []
            payload.reserveCapacity(keepRemaining)
            header = h
        }
    }
}

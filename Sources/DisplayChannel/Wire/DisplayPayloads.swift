// The display socket's header and request payloads (the backend sends them, QEMU reads them),
// as data only: one struct each, its one encoder (`write`) and its one decoder
// (`init(reading:)`), field by field in the order of QEMU's packed C struct.

import SystemSupport

/// `VhostUserGpuMsg` header: `u32 request, u32 flags, u32 size` (size of the following payload).
public struct DisplayMessageHeader: DisplayPayload {
    public static let byteCount = 12
    public static let specName = "VhostUserGpuMsg header"
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

    public init(reading r: inout ByteReader) {
        self.init(request: r.u32(), flags: DisplayMessageFlags(rawValue: r.u32()), size: r.u32())
    }
    public func write(_ w: inout FieldWriter) { w.u32(request); w.u32(flags.rawValue); w.u32(size) }
}

/// `VhostUserGpuCursorPos` {scanout_id, x, y} (CURSOR_POS, CURSOR_POS_HIDE).
public struct DisplayCursorPos: DisplayPayload {
    public static let byteCount = 12
    public static let specName = "VhostUserGpuCursorPos"
    public var scanoutID: UInt32, x: UInt32, y: UInt32
    public init(scanoutID: UInt32, x: UInt32, y: UInt32) { self.scanoutID = scanoutID; self.x = x; self.y = y }
    public init(reading r: inout ByteReader) { self.init(scanoutID: r.u32(), x: r.u32(), y: r.u32()) }
    public func write(_ w: inout FieldWriter) { w.u32(scanoutID); w.u32(x); w.u32(y) }
}

/// The part of `VhostUserGpuCursorUpdate` before the image: {pos, hot_x, hot_y}. The sink sends
/// it from scratch memory and the 16 KiB image straight from the caller's pointer.
public struct DisplayCursorUpdateHeader: DisplayPayload {
    public static let byteCount = DisplayCursorPos.byteCount + 8
    public static let specName = "VhostUserGpuCursorUpdate header"
    public var pos: DisplayCursorPos
    public var hotX: UInt32, hotY: UInt32
    public init(pos: DisplayCursorPos, hotX: UInt32, hotY: UInt32) { self.pos = pos; self.hotX = hotX; self.hotY = hotY }
    public init(reading r: inout ByteReader) {
        self.init(pos: DisplayCursorPos(reading: &r), hotX: r.u32(), hotY: r.u32())
    }
    public func write(_ w: inout FieldWriter) { pos.write(&w); w.u32(hotX); w.u32(hotY) }
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
    public static let headerByteCount = DisplayCursorUpdateHeader.byteCount
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
    public var header: DisplayCursorUpdateHeader { DisplayCursorUpdateHeader(pos: pos, hotX: hotX, hotY: hotY) }
    public init(reading r: inout ByteReader) {
        let header = DisplayCursorUpdateHeader(reading: &r)
        self.init(pos: header.pos, hotX: header.hotX, hotY: header.hotY, pixels: r.take(Self.pixelBytes))
    }
    public func write(_ w: inout FieldWriter) { header.write(&w); w.raw(pixels) }
}

/// `VhostUserGpuScanout` {scanout_id, width, height} (SCANOUT). 0x0 disables the scanout.
public struct DisplayScanout: DisplayPayload {
    public static let byteCount = 12
    public static let specName = "VhostUserGpuScanout"
    public var scanoutID: UInt32, width: UInt32, height: UInt32
    public init(scanoutID: UInt32, width: UInt32, height: UInt32) {
        self.scanoutID = scanoutID; self.width = width; self.height = height
    }
    public init(reading r: inout ByteReader) { self.init(scanoutID: r.u32(), width: r.u32(), height: r.u32()) }
    public func write(_ w: inout FieldWriter) { w.u32(scanoutID); w.u32(width); w.u32(height) }
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
    public init(reading r: inout ByteReader) {
        self.init(scanoutID: r.u32(), x: r.u32(), y: r.u32(), width: r.u32(), height: r.u32())
    }
    public func write(_ w: inout FieldWriter) {
        w.u32(scanoutID); w.u32(x); w.u32(y); w.u32(width); w.u32(height)
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
public struct DisplayDMABufScanout: DisplayPayload {
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
    /// The payload for showing `rect` of `buffer` on scanout `scanoutID` (the modifier is not
    /// part of it; see `DisplayDMABufScanout2`).
    public init(scanoutID: UInt32, rect: PixelRect, buffer: DisplayDMABuf) {
        self.init(scanoutID: scanoutID, x: rect.x, y: rect.y, width: rect.width, height: rect.height,
                  fdWidth: buffer.width, fdHeight: buffer.height, fdStride: buffer.stride,
                  fdFlags: buffer.flags.rawValue, fourcc: Int32(bitPattern: buffer.fourcc))
    }
    public init(reading r: inout ByteReader) {
        self.init(scanoutID: r.u32(), x: r.u32(), y: r.u32(), width: r.u32(), height: r.u32(),
                  fdWidth: r.u32(), fdHeight: r.u32(), fdStride: r.u32(), fdFlags: r.u32(), fourcc: r.i32())
    }
    public func write(_ w: inout FieldWriter) {
        w.u32(scanoutID); w.u32(x); w.u32(y); w.u32(width); w.u32(height)
        w.u32(fdWidth); w.u32(fdHeight); w.u32(fdStride); w.u32(fdFlags); w.i32(fourcc)
    }
    /// The scanout rect within the buffer.
    public var rect: PixelRect { PixelRect(x: x, y: y, width: width, height: height) }
}

/// `VhostUserGpuDMABUFScanout2` {dmabuf_scanout, u64 modifier} (DMABUF_SCANOUT2); the modifier
/// sits unaligned at offset 40, as in the packed struct.
public struct DisplayDMABufScanout2: DisplayPayload {
    public static let byteCount = 48
    public static let specName = "VhostUserGpuDMABUFScanout2"
    public var scanout: DisplayDMABufScanout
    public var modifier: UInt64
    public init(scanout: DisplayDMABufScanout, modifier: UInt64) { self.scanout = scanout; self.modifier = modifier }
    public init(reading r: inout ByteReader) {
        self.init(scanout: DisplayDMABufScanout(reading: &r), modifier: r.u64())
    }
    public func write(_ w: inout FieldWriter) { scanout.write(&w); w.u64(modifier) }
}

/// `VhostUserGpuEdidRequest` {scanout_id} (GET_EDID).
public struct DisplayEDIDRequest: DisplayPayload {
    public static let byteCount = 4
    public static let specName = "VhostUserGpuEdidRequest"
    public var scanoutID: UInt32
    public init(scanoutID: UInt32) { self.scanoutID = scanoutID }
    public init(reading r: inout ByteReader) { self.init(scanoutID: r.u32()) }
    public func write(_ w: inout FieldWriter) { w.u32(scanoutID) }
}

/// `u64` feature bits (GET_PROTOCOL_FEATURES reply, SET_PROTOCOL_FEATURES request).
public struct DisplayFeaturesPayload: DisplayPayload {
    public static let byteCount = 8
    public static let specName = "u64 protocol features"
    public var features: DisplayProtocolFeatures
    public init(_ features: DisplayProtocolFeatures) { self.features = features }
    public init(reading r: inout ByteReader) { self.init(DisplayProtocolFeatures(rawValue: r.u64())) }
    public func write(_ w: inout FieldWriter) { w.u64(features.rawValue) }
}

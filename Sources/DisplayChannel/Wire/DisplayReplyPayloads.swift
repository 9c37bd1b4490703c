// The payloads of QEMU's replies on the display socket (GET_DISPLAY_INFO, GET_EDID): they are
// virtio-gpu response structs. Data only: one struct each, one encoder, one decoder.

import SystemSupport

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
    /// `virtio_gpu_display_one`.
    static let modeByteCount = 24
    public static let byteCount = DisplayCtrlHeader.byteCount + maxScanouts * modeByteCount
    public static let specName = "virtio_gpu_resp_display_info"
    /// `hdr.type`; QEMU sends `VIRTIO_GPU_RESP_OK_DISPLAY_INFO`.
    public var type: UInt32
    /// Exactly 16 modes after decoding; encoding pads with zeroed (disabled) modes.
    public var modes: [DisplayMode]

    public init(type: UInt32 = DisplayCtrlHeader.okDisplayInfo, modes: [DisplayMode]) {
        precondition(modes.count <= Self.maxScanouts)
        self.type = type; self.modes = modes
    }
    public init(reading r: inout ByteReader) {
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
    public func write(_ w: inout FieldWriter) {
        w.u32(type)
        w.zeros(DisplayCtrlHeader.byteCount - 4)
        let sent = modes.prefix(Self.maxScanouts)
        for m in sent {
            w.u32(m.rect.x); w.u32(m.rect.y); w.u32(m.rect.width); w.u32(m.rect.height)
            w.u32(m.enabled ? 1 : 0); w.u32(m.flags)
        }
        w.zeros((Self.maxScanouts - sent.count) * Self.modeByteCount)
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

    public init(reading r: inout ByteReader) {
        let type = r.u32()
        r.skip(DisplayCtrlHeader.byteCount - 4)
        let size = r.u32()
        r.skip(4)
        self.init(type: type, size: size, edid: r.take(Self.edidCapacity))
    }
    public func write(_ w: inout FieldWriter) {
        w.u32(type)
        w.zeros(DisplayCtrlHeader.byteCount - 4)
        w.u32(size); w.u32(0)
        w.raw(edid)
    }
}

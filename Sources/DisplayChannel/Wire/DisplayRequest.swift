// The vhost-user-gpu display protocol's vocabulary (QEMU docs/interop/vhost-user-gpu.rst): the
// request codes with their size rules, the header flags and the protocol feature bits.
//
// Numbers are in machine native byte order (spec "Wire format"); this project only runs on
// little-endian hosts, like QEMU's own backend, which never swaps. Facts checked against QEMU
// 10's frontend (hw/display/vhost-user-gpu.c) and its C backend (contrib/vhost-user-gpu/): all
// payload structs are QEMU_PACKED; replies carry the request code of the request they answer
// and flags == VHOST_USER_GPU_MSG_FLAG_REPLY (0x4).

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
        case .dmabufScanout: .exact(DisplayDMABufScanout.byteCount)
        case .dmabufUpdate: .exact(DisplayUpdateHeader.byteCount)
        case .getEDID: .exact(DisplayEDIDRequest.byteCount)
        case .dmabufScanout2: .exact(DisplayDMABufScanout2.byteCount)
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


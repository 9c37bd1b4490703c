import CShims
import DisplayChannel
import VirtioCore

/// A response to a control-queue request (virtio 1.2 section 5.7.6.7). Data only.
public enum GPUResponse {
    /// VIRTIO_GPU_RESP_OK_NODATA.
    case okNoData
    /// VIRTIO_GPU_RESP_OK_DISPLAY_INFO.
    case okDisplayInfo(virtio_gpu_resp_display_info)
    /// VIRTIO_GPU_RESP_OK_EDID.
    case okEDID(virtio_gpu_resp_edid)
    /// VIRTIO_GPU_RESP_OK_RESOURCE_UUID.
    case okResourceUUID(ResourceUUID)
    /// VIRTIO_GPU_RESP_OK_CAPSET_INFO.
    case okCapsetInfo(id: UInt32, maxVersion: UInt32, maxSize: UInt32)
    /// VIRTIO_GPU_RESP_OK_CAPSET: the header, then the capset's bytes.
    case okCapset([UInt8])
    /// VIRTIO_GPU_RESP_ERR_*: a bare header.
    case error(GPUError)

    /// The response `type`.
    public var type: UInt32 {
        switch self {
        case .okNoData: VIRTIO_GPU_RESP_OK_NODATA.rawValue
        case .okDisplayInfo: VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue
        case .okEDID: VIRTIO_GPU_RESP_OK_EDID.rawValue
        case .okResourceUUID: VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue
        case .okCapsetInfo: VIRTIO_GPU_RESP_OK_CAPSET_INFO.rawValue
        case .okCapset: VIRTIO_GPU_RESP_OK_CAPSET.rawValue
        case let .error(e): e.responseType
        }
    }

    /// Bytes this response takes on the wire.
    public var size: Int {
        switch self {
        case .okNoData, .error: MemoryLayout<virtio_gpu_ctrl_hdr>.size
        case .okDisplayInfo: MemoryLayout<virtio_gpu_resp_display_info>.size
        case .okEDID: MemoryLayout<virtio_gpu_resp_edid>.size
        case .okResourceUUID: MemoryLayout<virtio_gpu_resp_resource_uuid>.size
        case .okCapsetInfo: MemoryLayout<virtio_gpu_resp_capset_info>.size
        case let .okCapset(data): MemoryLayout<virtio_gpu_ctrl_hdr>.size + data.count
        }
    }

    /// The response header for `request`: spec 5.7.6.7, "if the driver sets VIRTIO_GPU_FLAG_FENCE
    /// the device MUST set it in the response and copy fence_id"; ctx_id is echoed too (as QEMU
    /// does), and ring_idx with VIRTIO_GPU_FLAG_INFO_RING_IDX. 2D commands complete synchronously,
    /// so the fence is signalled by this very response.
    public static func header(type: UInt32, echoing request: virtio_gpu_ctrl_hdr) -> virtio_gpu_ctrl_hdr {
        var h = virtio_gpu_ctrl_hdr()
        h.type = type
        let fence = UInt32(VIRTIO_GPU_FLAG_FENCE)
        let ringIdx = UInt32(VIRTIO_GPU_FLAG_INFO_RING_IDX)
        if request.flags & fence != 0 {
            h.flags = fence
            h.fence_id = request.fence_id
            h.ctx_id = request.ctx_id
            if request.flags & ringIdx != 0 {
                h.flags |= ringIdx
                h.ring_idx = request.ring_idx
            }
        }
        return h
    }

    /// Writes the whole response (header with fence echo, then the body) or nothing.
    /// Returns the number of bytes written.
    public func encode(echoing request: virtio_gpu_ctrl_hdr, into writer: inout ChainWriter) throws(ChainError) -> Int {
        let hdr = Self.header(type: type, echoing: request)
        guard writer.available >= size else { throw .shortWrite(wanted: size, available: writer.available) }
        switch self {
        case .okNoData, .error:
            try writer.writeObject(hdr)
        case var .okDisplayInfo(body):
            body.hdr = hdr
            try writer.writeObject(body)
        case var .okEDID(body):
            body.hdr = hdr
            try writer.writeObject(body)
        case let .okResourceUUID(uuid):
            var body = virtio_gpu_resp_resource_uuid()
            body.hdr = hdr
            withUnsafeMutableBytes(of: &body.uuid) { uuid.write(to: $0.baseAddress!) }
            try writer.writeObject(body)
        case let .okCapsetInfo(id, maxVersion, maxSize):
            var body = virtio_gpu_resp_capset_info()
            body.hdr = hdr
            body.capset_id = id
            body.capset_max_version = maxVersion
            body.capset_max_size = maxSize
            try writer.writeObject(body)
        case let .okCapset(data):
            try writer.writeObject(hdr)
            var writeFailure: ChainError?
            data.withUnsafeBytes { bytes in
                do throws(ChainError) { try writer.write(bytes) } catch { writeFailure = error }
            }
            if let writeFailure { throw writeFailure }
        }
        return size
    }

    /// A display-info body (header filled in by `encode`): `modes[i]` for scanout i, up to
    /// `VIRTIO_GPU_MAX_SCANOUTS`; missing ones are disabled and zero.
    public static func displayInfo(_ modes: [DisplayMode]) -> virtio_gpu_resp_display_info {
        var info = virtio_gpu_resp_display_info()
        withUnsafeMutableBytes(of: &info.pmodes) { raw in
            let slots = raw.bindMemory(to: virtio_gpu_display_one.self)
            for (i, mode) in modes.prefix(slots.count).enumerated() {
                var one = virtio_gpu_display_one()
                one.r = virtio_gpu_rect(x: mode.rect.x, y: mode.rect.y, width: mode.rect.width, height: mode.rect.height)
                one.enabled = mode.enabled ? 1 : 0
                one.flags = mode.flags
                slots[i] = one
            }
        }
        return info
    }

    /// An EDID body (header filled in by `encode`); nil if `blob` is empty or longer than the
    /// 1024 bytes the response can carry.
    public static func edid(_ blob: [UInt8]) -> virtio_gpu_resp_edid? {
        var resp = virtio_gpu_resp_edid()
        let capacity = MemoryLayout.size(ofValue: resp.edid)
        guard !blob.isEmpty, blob.count <= capacity else { return nil }
        resp.size = UInt32(blob.count)
        withUnsafeMutableBytes(of: &resp.edid) { raw in
            blob.withUnsafeBytes { raw.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: blob.count) }
        }
        return resp
    }
}

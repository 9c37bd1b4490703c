// The request bytes of each virtio-gpu 2D command, built from the uapi structs in one place: the
// driver (VirtioGPUDriver) submits them, and tests that feed the device directly
// (Tests/VirtioGPUTests) queue them, bad headers and entry counts included.

import CShims
import VirtioCore

public enum GPUCommands {
    /// A control header; `fence` sets VIRTIO_GPU_FLAG_FENCE with that id.
    public static func header(_ type: virtio_gpu_ctrl_type, flags: UInt32 = 0, fence: UInt64? = nil,
                              context: UInt32 = 0, ring: UInt8 = 0) -> virtio_gpu_ctrl_hdr {
        var h = virtio_gpu_ctrl_hdr()
        h.type = type.rawValue
        h.flags = flags
        if let fence { h.flags |= UInt32(VIRTIO_GPU_FLAG_FENCE); h.fence_id = fence }
        h.ctx_id = context
        h.ring_idx = ring
        return h
    }

    public static func rect(_ x: UInt32, _ y: UInt32, _ w: UInt32, _ h: UInt32) -> virtio_gpu_rect {
        virtio_gpu_rect(x: x, y: y, width: w, height: h)
    }

    public static func displayInfo() -> [UInt8] { bytes(of: header(VIRTIO_GPU_CMD_GET_DISPLAY_INFO)) }

    public static func getEDID(_ scanout: UInt32) -> [UInt8] {
        var c = virtio_gpu_cmd_get_edid()
        c.hdr = header(VIRTIO_GPU_CMD_GET_EDID)
        c.scanout = scanout
        return bytes(of: c)
    }

    public static func create2D(_ id: UInt32, format: UInt32, _ w: UInt32, _ h: UInt32,
                                header hdr: virtio_gpu_ctrl_hdr = header(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D)) -> [UInt8] {
        var c = virtio_gpu_resource_create_2d()
        c.hdr = hdr
        c.resource_id = id; c.format = format; c.width = w; c.height = h
        return bytes(of: c)
    }

    public static func unref(_ id: UInt32) -> [UInt8] {
        var c = virtio_gpu_resource_unref()
        c.hdr = header(VIRTIO_GPU_CMD_RESOURCE_UNREF)
        c.resource_id = id
        return bytes(of: c)
    }

    /// ATTACH_BACKING with its mem entries; `nrEntries` may lie (bad-input tests).
    public static func attach(_ id: UInt32, _ entries: [(GuestPhysicalAddress, UInt32)], nrEntries: UInt32? = nil) -> [UInt8] {
        var c = virtio_gpu_resource_attach_backing()
        c.hdr = header(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING)
        c.resource_id = id
        c.nr_entries = nrEntries ?? UInt32(entries.count)
        var out = bytes(of: c)
        for (address, length) in entries {
            var e = virtio_gpu_mem_entry()
            e.addr = address.raw; e.length = length
            out += bytes(of: e)
        }
        return out
    }

    public static func detach(_ id: UInt32) -> [UInt8] {
        var c = virtio_gpu_resource_detach_backing()
        c.hdr = header(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING)
        c.resource_id = id
        return bytes(of: c)
    }

    public static func transfer(_ id: UInt32, _ r: virtio_gpu_rect, offset: UInt64, fence: UInt64? = nil) -> [UInt8] {
        var c = virtio_gpu_transfer_to_host_2d()
        c.hdr = header(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, fence: fence)
        c.resource_id = id; c.r = r; c.offset = offset
        return bytes(of: c)
    }

    public static func setScanout(_ scanout: UInt32, _ id: UInt32, _ r: virtio_gpu_rect) -> [UInt8] {
        var c = virtio_gpu_set_scanout()
        c.hdr = header(VIRTIO_GPU_CMD_SET_SCANOUT)
        c.scanout_id = scanout; c.resource_id = id; c.r = r
        return bytes(of: c)
    }

    public static func flush(_ id: UInt32, _ r: virtio_gpu_rect, fence: UInt64? = nil) -> [UInt8] {
        var c = virtio_gpu_resource_flush()
        c.hdr = header(VIRTIO_GPU_CMD_RESOURCE_FLUSH, fence: fence)
        c.resource_id = id; c.r = r
        return bytes(of: c)
    }

    public static func assignUUID(_ id: UInt32) -> [UInt8] {
        var c = virtio_gpu_resource_assign_uuid()
        c.hdr = header(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID)
        c.resource_id = id
        return bytes(of: c)
    }

    /// UPDATE_CURSOR or MOVE_CURSOR (or any other `type`, for bad-input tests).
    public static func cursor(_ type: virtio_gpu_ctrl_type, scanout: UInt32 = 0, x: UInt32 = 0, y: UInt32 = 0,
                              id: UInt32 = 0, hotX: UInt32 = 0, hotY: UInt32 = 0) -> [UInt8] {
        var c = virtio_gpu_update_cursor()
        c.hdr = header(type)
        c.pos.scanout_id = scanout; c.pos.x = x; c.pos.y = y
        c.resource_id = id; c.hot_x = hotX; c.hot_y = hotY
        return bytes(of: c)
    }

    public static func bytes<T: BitwiseCopyable>(of value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
}

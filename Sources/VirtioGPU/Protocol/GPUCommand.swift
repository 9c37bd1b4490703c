import CShims
import DisplayChannel
import VirtioCore

#if _endian(big)
#error("virtio-gpu wire structs are little-endian; this backend reads them in host order")
#endif

/// One virtio-gpu request as it arrived (virtio 1.2 section 5.7.6, `linux/virtio_gpu.h`): the C
/// wire structs, unchanged, each with its `virtio_gpu_ctrl_hdr`. Data only; meaning is applied by
/// the dispatcher. Decoded from the readable part of a descriptor chain by `decode`.
public enum GPUCommand {
    /// VIRTIO_GPU_CMD_GET_DISPLAY_INFO: header only.
    case getDisplayInfo
    /// VIRTIO_GPU_CMD_GET_EDID.
    case getEDID(virtio_gpu_cmd_get_edid)
    /// VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.
    case resourceCreate2D(virtio_gpu_resource_create_2d)
    /// VIRTIO_GPU_CMD_RESOURCE_UNREF.
    case resourceUnref(virtio_gpu_resource_unref)
    /// VIRTIO_GPU_CMD_SET_SCANOUT.
    case setScanout(virtio_gpu_set_scanout)
    /// VIRTIO_GPU_CMD_RESOURCE_FLUSH.
    case resourceFlush(virtio_gpu_resource_flush)
    /// VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D.
    case transferToHost2D(virtio_gpu_transfer_to_host_2d)
    /// VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING with its `nr_entries` memory entries (read only after
    /// checking the chain holds them all).
    case resourceAttachBacking(virtio_gpu_resource_attach_backing, entries: [virtio_gpu_mem_entry])
    /// VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING.
    case resourceDetachBacking(virtio_gpu_resource_detach_backing)
    /// VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID.
    case resourceAssignUUID(virtio_gpu_resource_assign_uuid)
    /// VIRTIO_GPU_CMD_UPDATE_CURSOR (cursor queue).
    case updateCursor(virtio_gpu_update_cursor)
    /// VIRTIO_GPU_CMD_MOVE_CURSOR (cursor queue).
    case moveCursor(virtio_gpu_update_cursor)
    /// VIRTIO_GPU_CMD_GET_CAPSET_INFO (virgl only).
    case getCapsetInfo(virtio_gpu_get_capset_info)
    /// VIRTIO_GPU_CMD_GET_CAPSET (virgl only).
    case getCapset(virtio_gpu_get_capset)
    /// VIRTIO_GPU_CMD_CTX_CREATE (virgl only).
    case ctxCreate(virtio_gpu_ctx_create)
    /// VIRTIO_GPU_CMD_CTX_DESTROY: the context is the header's ctx_id.
    case ctxDestroy(virtio_gpu_ctrl_hdr)
    /// VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE / DETACH_RESOURCE.
    case ctxAttachResource(virtio_gpu_ctx_resource)
    case ctxDetachResource(virtio_gpu_ctx_resource)
    /// VIRTIO_GPU_CMD_RESOURCE_CREATE_3D.
    case resourceCreate3D(virtio_gpu_resource_create_3d)
    /// VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D / TRANSFER_FROM_HOST_3D.
    case transferToHost3D(virtio_gpu_transfer_host_3d)
    case transferFromHost3D(virtio_gpu_transfer_host_3d)
    /// VIRTIO_GPU_CMD_SUBMIT_3D with its `size` bytes of command stream (read only after checking
    /// the chain holds them, and at most `GPUCommand.maxSubmitBytes`).
    case submit3D(virtio_gpu_cmd_submit, commands: [UInt8])
    /// A command the spec defines but this device does not offer (3D without virgl, blob): only
    /// the header was read.
    case notSupported(type: UInt32)
    /// A type the spec does not define: only the header was read.
    case unknown(type: UInt32)

    /// Reads the common header without moving the reader.
    public static func peekHeader(_ reader: ChainReader) throws(GPUFailure) -> virtio_gpu_ctrl_hdr {
        do { return try reader.peekObject(virtio_gpu_ctrl_hdr.self) }
        catch { throw Self.failure(error, type: nil) }
    }

    /// Decodes one request from `reader` (positioned at the header). Reads exactly the command's
    /// struct (and, for ATTACH_BACKING, its entries); trailing bytes are ignored.
    ///
    /// Throws `invalidParameter` when the chain holds fewer bytes than the command's struct
    /// (spec 5.7.6.7 leaves the code open; QEMU's backend answers a short header this way), or
    /// when ATTACH_BACKING announces more than `maxBackingEntries` entries or more entries than
    /// the chain holds (checked before anything is allocated).
    public static func decode(_ reader: inout ChainReader, maxBackingEntries: UInt32, virgl: Bool = false) throws(GPUFailure) -> GPUCommand {
        let header = try peekHeader(reader)
        let type = header.type
        if virgl, let command = try decode3D(type, &reader) { return command }
        switch type {
        case VIRTIO_GPU_CMD_GET_DISPLAY_INFO.rawValue:
            _ = try read(virtio_gpu_ctrl_hdr.self, &reader, type)
            return .getDisplayInfo
        case VIRTIO_GPU_CMD_GET_EDID.rawValue:
            return .getEDID(try read(virtio_gpu_cmd_get_edid.self, &reader, type))
        case VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.rawValue:
            return .resourceCreate2D(try read(virtio_gpu_resource_create_2d.self, &reader, type))
        case VIRTIO_GPU_CMD_RESOURCE_UNREF.rawValue:
            return .resourceUnref(try read(virtio_gpu_resource_unref.self, &reader, type))
        case VIRTIO_GPU_CMD_SET_SCANOUT.rawValue:
            return .setScanout(try read(virtio_gpu_set_scanout.self, &reader, type))
        case VIRTIO_GPU_CMD_RESOURCE_FLUSH.rawValue:
            return .resourceFlush(try read(virtio_gpu_resource_flush.self, &reader, type))
        case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D.rawValue:
            return .transferToHost2D(try read(virtio_gpu_transfer_to_host_2d.self, &reader, type))
        case VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING.rawValue:
            let ab = try read(virtio_gpu_resource_attach_backing.self, &reader, type)
            return .resourceAttachBacking(ab, entries: try readEntries(count: ab.nr_entries, max: maxBackingEntries, &reader))
        case VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING.rawValue:
            return .resourceDetachBacking(try read(virtio_gpu_resource_detach_backing.self, &reader, type))
        case VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID.rawValue:
            return .resourceAssignUUID(try read(virtio_gpu_resource_assign_uuid.self, &reader, type))
        case VIRTIO_GPU_CMD_UPDATE_CURSOR.rawValue:
            return .updateCursor(try read(virtio_gpu_update_cursor.self, &reader, type))
        case VIRTIO_GPU_CMD_MOVE_CURSOR.rawValue:
            return .moveCursor(try read(virtio_gpu_update_cursor.self, &reader, type))
        default:
            _ = try read(virtio_gpu_ctrl_hdr.self, &reader, type)
            return isDefinedUnsupported(type) ? .notSupported(type: type) : .unknown(type: type)
        }
    }

    /// Largest SUBMIT_3D command stream accepted (Mesa's virgl winsys sends at most 64 KiB at a time).
    public static let maxSubmitBytes = 16 << 20

    /// The virgl commands (only when virgl is on; otherwise they stay `notSupported`).
    private static func decode3D(_ type: UInt32, _ reader: inout ChainReader) throws(GPUFailure) -> GPUCommand? {
        switch type {
        case VIRTIO_GPU_CMD_GET_CAPSET_INFO.rawValue: return .getCapsetInfo(try read(virtio_gpu_get_capset_info.self, &reader, type))
        case VIRTIO_GPU_CMD_GET_CAPSET.rawValue: return .getCapset(try read(virtio_gpu_get_capset.self, &reader, type))
        case VIRTIO_GPU_CMD_CTX_CREATE.rawValue: return .ctxCreate(try read(virtio_gpu_ctx_create.self, &reader, type))
        case VIRTIO_GPU_CMD_CTX_DESTROY.rawValue: return .ctxDestroy(try read(virtio_gpu_ctrl_hdr.self, &reader, type))
        case VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE.rawValue: return .ctxAttachResource(try read(virtio_gpu_ctx_resource.self, &reader, type))
        case VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE.rawValue: return .ctxDetachResource(try read(virtio_gpu_ctx_resource.self, &reader, type))
        case VIRTIO_GPU_CMD_RESOURCE_CREATE_3D.rawValue: return .resourceCreate3D(try read(virtio_gpu_resource_create_3d.self, &reader, type))
        case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D.rawValue: return .transferToHost3D(try read(virtio_gpu_transfer_host_3d.self, &reader, type))
        case VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D.rawValue: return .transferFromHost3D(try read(virtio_gpu_transfer_host_3d.self, &reader, type))
        case VIRTIO_GPU_CMD_SUBMIT_3D.rawValue:
            let submit = try read(virtio_gpu_cmd_submit.self, &reader, type)
            let size = Int(submit.size)
            guard size <= maxSubmitBytes else { throw .invalidParameter("SUBMIT_3D of \(size) bytes > \(maxSubmitBytes)") }
            guard size <= reader.remaining else {
                throw .invalidParameter("SUBMIT_3D size \(size) but the chain holds \(reader.remaining) more bytes")
            }
            var commands = [UInt8](repeating: 0, count: size)
            var readFailure: ChainError?
            commands.withUnsafeMutableBytes { buffer in
                do throws(ChainError) { try reader.read(into: buffer) } catch { readFailure = error }
            }
            if let readFailure { throw failure(readFailure, type: type) }
            return .submit3D(submit, commands: commands)
        default:
            return nil
        }
    }

    /// The size of the OK response to a request of `type`: what the writable part of the chain
    /// must hold before the command is executed. Error responses are a bare header. (GET_CAPSET's
    /// body size depends on the capset: checked when it runs.)
    public static func responseSize(forType type: UInt32) -> Int {
        switch type {
        case VIRTIO_GPU_CMD_GET_CAPSET_INFO.rawValue: MemoryLayout<virtio_gpu_resp_capset_info>.size
        case VIRTIO_GPU_CMD_GET_DISPLAY_INFO.rawValue: MemoryLayout<virtio_gpu_resp_display_info>.size
        case VIRTIO_GPU_CMD_GET_EDID.rawValue: MemoryLayout<virtio_gpu_resp_edid>.size
        case VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID.rawValue: MemoryLayout<virtio_gpu_resp_resource_uuid>.size
        default: MemoryLayout<virtio_gpu_ctrl_hdr>.size
        }
    }

    /// The spec name of a command type, for logs ("unknown" for anything else).
    public static func name(forType type: UInt32) -> String {
        switch type {
        case VIRTIO_GPU_CMD_GET_DISPLAY_INFO.rawValue: "GET_DISPLAY_INFO"
        case VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.rawValue: "RESOURCE_CREATE_2D"
        case VIRTIO_GPU_CMD_RESOURCE_UNREF.rawValue: "RESOURCE_UNREF"
        case VIRTIO_GPU_CMD_SET_SCANOUT.rawValue: "SET_SCANOUT"
        case VIRTIO_GPU_CMD_RESOURCE_FLUSH.rawValue: "RESOURCE_FLUSH"
        case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D.rawValue: "TRANSFER_TO_HOST_2D"
        case VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING.rawValue: "RESOURCE_ATTACH_BACKING"
        case VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING.rawValue: "RESOURCE_DETACH_BACKING"
        case VIRTIO_GPU_CMD_GET_CAPSET_INFO.rawValue: "GET_CAPSET_INFO"
        case VIRTIO_GPU_CMD_GET_CAPSET.rawValue: "GET_CAPSET"
        case VIRTIO_GPU_CMD_GET_EDID.rawValue: "GET_EDID"
        case VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID.rawValue: "RESOURCE_ASSIGN_UUID"
        case VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB.rawValue: "RESOURCE_CREATE_BLOB"
        case VIRTIO_GPU_CMD_SET_SCANOUT_BLOB.rawValue: "SET_SCANOUT_BLOB"
        case VIRTIO_GPU_CMD_CTX_CREATE.rawValue: "CTX_CREATE"
        case VIRTIO_GPU_CMD_CTX_DESTROY.rawValue: "CTX_DESTROY"
        case VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE.rawValue: "CTX_ATTACH_RESOURCE"
        case VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE.rawValue: "CTX_DETACH_RESOURCE"
        case VIRTIO_GPU_CMD_RESOURCE_CREATE_3D.rawValue: "RESOURCE_CREATE_3D"
        case VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D.rawValue: "TRANSFER_TO_HOST_3D"
        case VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D.rawValue: "TRANSFER_FROM_HOST_3D"
        case VIRTIO_GPU_CMD_SUBMIT_3D.rawValue: "SUBMIT_3D"
        case VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB.rawValue: "RESOURCE_MAP_BLOB"
        case VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB.rawValue: "RESOURCE_UNMAP_BLOB"
        case VIRTIO_GPU_CMD_UPDATE_CURSOR.rawValue: "UPDATE_CURSOR"
        case VIRTIO_GPU_CMD_MOVE_CURSOR.rawValue: "MOVE_CURSOR"
        default: "unknown"
        }
    }

    /// The request's `type` field.
    public var type: UInt32 {
        switch self {
        case .getDisplayInfo: VIRTIO_GPU_CMD_GET_DISPLAY_INFO.rawValue
        case .getEDID: VIRTIO_GPU_CMD_GET_EDID.rawValue
        case .resourceCreate2D: VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.rawValue
        case .resourceUnref: VIRTIO_GPU_CMD_RESOURCE_UNREF.rawValue
        case .setScanout: VIRTIO_GPU_CMD_SET_SCANOUT.rawValue
        case .resourceFlush: VIRTIO_GPU_CMD_RESOURCE_FLUSH.rawValue
        case .transferToHost2D: VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D.rawValue
        case .resourceAttachBacking: VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING.rawValue
        case .resourceDetachBacking: VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING.rawValue
        case .resourceAssignUUID: VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID.rawValue
        case .updateCursor: VIRTIO_GPU_CMD_UPDATE_CURSOR.rawValue
        case .moveCursor: VIRTIO_GPU_CMD_MOVE_CURSOR.rawValue
        case .getCapsetInfo: VIRTIO_GPU_CMD_GET_CAPSET_INFO.rawValue
        case .getCapset: VIRTIO_GPU_CMD_GET_CAPSET.rawValue
        case .ctxCreate: VIRTIO_GPU_CMD_CTX_CREATE.rawValue
        case .ctxDestroy: VIRTIO_GPU_CMD_CTX_DESTROY.rawValue
        case .ctxAttachResource: VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE.rawValue
        case .ctxDetachResource: VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE.rawValue
        case .resourceCreate3D: VIRTIO_GPU_CMD_RESOURCE_CREATE_3D.rawValue
        case .transferToHost3D: VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D.rawValue
        case .transferFromHost3D: VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D.rawValue
        case .submit3D: VIRTIO_GPU_CMD_SUBMIT_3D.rawValue
        case let .notSupported(t), let .unknown(t): t
        }
    }

    /// The spec name, for logs.
    public var name: String { Self.name(forType: type) }

    // MARK: helpers

    /// Defined by the spec (3D, capsets, blob) but not offered: answered ERR_UNSPEC, never executed.
    static func isDefinedUnsupported(_ type: UInt32) -> Bool {
        switch type {
        case VIRTIO_GPU_CMD_GET_CAPSET_INFO.rawValue, VIRTIO_GPU_CMD_GET_CAPSET.rawValue,
             VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB.rawValue, VIRTIO_GPU_CMD_SET_SCANOUT_BLOB.rawValue,
             VIRTIO_GPU_CMD_CTX_CREATE.rawValue, VIRTIO_GPU_CMD_CTX_DESTROY.rawValue,
             VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE.rawValue, VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE.rawValue,
             VIRTIO_GPU_CMD_RESOURCE_CREATE_3D.rawValue, VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D.rawValue,
             VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D.rawValue, VIRTIO_GPU_CMD_SUBMIT_3D.rawValue,
             VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB.rawValue, VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB.rawValue:
            true
        default:
            false
        }
    }

    private static func read<T: BitwiseCopyable>(_: T.Type, _ reader: inout ChainReader, _ type: UInt32) throws(GPUFailure) -> T {
        do { return try reader.readObject(T.self) }
        catch { throw failure(error, type: type) }
    }

    /// Spec 5.7.6.8 (ATTACH_BACKING): `nr_entries` entries follow the struct. The count is guest
    /// controlled: cap it and check the chain really holds `nr_entries * 16` bytes before allocating.
    private static func readEntries(count: UInt32, max: UInt32, _ reader: inout ChainReader) throws(GPUFailure) -> [virtio_gpu_mem_entry] {
        guard count > 0 else { throw .invalidParameter("RESOURCE_ATTACH_BACKING with nr_entries 0") }
        guard count <= max else { throw .invalidParameter("RESOURCE_ATTACH_BACKING nr_entries \(count) > \(max)") }
        let entrySize = MemoryLayout<virtio_gpu_mem_entry>.size
        let (bytes, overflow) = Int(count).multipliedReportingOverflow(by: entrySize)
        guard !overflow, bytes <= reader.remaining else {
            throw .invalidParameter("RESOURCE_ATTACH_BACKING nr_entries \(count) but the chain holds \(reader.remaining) more bytes")
        }
        var failure: ChainError?
        let entries = [virtio_gpu_mem_entry](unsafeUninitializedCapacity: Int(count)) { buffer, initialized in
            // Safety: virtio_gpu_mem_entry is a plain C struct; every byte pattern is a valid value.
            do throws(ChainError) {
                try reader.read(into: UnsafeMutableRawBufferPointer(buffer))
                initialized = Int(count)
            } catch {
                failure = error
                initialized = 0
            }
        }
        if let failure { throw Self.failure(failure, type: VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING.rawValue) }
        return entries
    }

    private static func failure(_ error: ChainError, type: UInt32?) -> GPUFailure {
        let what = type.map { name(forType: $0) } ?? "request header"
        switch error {
        case let .shortRead(wanted, available):
            return .invalidParameter("\(what) truncated: needs \(wanted) bytes, chain holds \(available)")
        case .shortWrite, .memory:
            return .invalidParameter("\(what) unreadable: \(error)")
        }
    }
}

extension PixelRect {
    /// A command's rectangle (`virtio_gpu_rect`) as the display speaks it.
    init(_ r: virtio_gpu_rect) {
        self.init(x: r.x, y: r.y, width: r.width, height: r.height)
    }
}

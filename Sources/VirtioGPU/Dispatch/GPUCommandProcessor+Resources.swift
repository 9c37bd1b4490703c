import CShims
import VirtioCore

/// The resource commands that create, name and drop resources: RESOURCE_CREATE_2D,
/// RESOURCE_ASSIGN_UUID, RESOURCE_UNREF. Their lifecycle bookkeeping (ages, events, the UUID
/// observer) is `ResourceLifecycle`'s.
extension GPUCommandProcessor {
    /// RESOURCE_CREATE_2D. Checks in QEMU's order: id, existence, format, size; then the caps.
    func createResource2D(_ c: virtio_gpu_resource_create_2d) throws(GPUFailure) {
        let id = ResourceID(c.resource_id)
        guard !id.isNone else { throw .invalidResourceID("resource id 0 is reserved") }
        guard renderer.geometry(of: id) == nil else { throw .invalidResourceID("\(id) already exists") }
        guard let format = PixelFormat(wire: c.format) else { throw .invalidParameter("unknown format \(c.format)") }
        guard c.width > 0, c.height > 0 else { throw .invalidParameter("size \(c.width)x\(c.height)") }
        try renderer.createResource2D(id, format: format, width: c.width, height: c.height)
        lifecycle.created(id)
    }

    /// RESOURCE_ASSIGN_UUID: the resource's UUID, made (with its host buffer) on first use.
    func assignUUID(_ c: virtio_gpu_resource_assign_uuid, memory: GuestMemory) throws(GPUFailure) -> ResourceUUID {
        let id = ResourceID(c.resource_id)
        guard renderer.geometry(of: id) != nil else { throw .invalidResourceID("\(id) does not exist") }
        let had = uuids.uuid(device: deviceID, resource: id)
        if had == nil, let info = renderer.exportResource(id, memory: memory) {
            // The host buffer is chosen before the UUID resolves, so no importer ever sees
            // the UUID without its buffer.
            if let why = info.shadowReason { logger.info("\(id) exported as \(info.kind.rawValue) (\(info.coherency.rawValue)): \(why)") }
        }
        let uuid = uuids.assign(device: deviceID, resource: id)
        if had == nil { lifecycle.uuidAssigned(id, uuid) }
        return uuid
    }

    /// RESOURCE_UNREF: like QEMU, first disables every scanout showing the resource.
    func unrefResource(_ id: ResourceID) throws(GPUFailure) {
        guard renderer.geometry(of: id) != nil else { throw .invalidResourceID("\(id) does not exist") }
        let display = self.display
        scanouts.withLock { t in
            for i in 0..<t.count where t[i].resource == id { disableHead(i, &t, display: display) }
        }
        try renderer.destroyResource(id)
        let uuid = uuids.unregister(device: deviceID, resource: id)
        lifecycle.unreferenced(id, uuid: uuid)
    }
}

import HostBuffers

/// What the control socket, `vgpuctl` and the tests read of a device: resources with their
/// ages, heads, backing and host buffers. Reads only; commands change nothing here.
extension GPUCommandProcessor {
    /// Every resource with its UUID, geometry, host and backing sizes and the heads showing it.
    public func snapshot() -> [ResourceInfo] {
        let heads = scanouts.withLock { $0.scanouts }
        let created = lifecycle.creationTimes()
        return renderer.resources().map { r in
            ResourceInfo(id: r.id, uuid: uuids.uuid(device: deviceID, resource: r.id), format: r.geometry.format,
                         width: r.geometry.width, height: r.geometry.height, stride: r.stride, hostBytes: r.hostBytes,
                         backingEntryCount: r.backingEntryCount, backingBytes: r.backingBytes, hostBuffer: r.hostBuffer,
                         scanouts: heads.indices.filter { heads[$0].resource == r.id }.map { UInt32($0) },
                         createdAt: created[r.id] ?? 0)
        }
    }

    /// One resource as `snapshot()` reports it, or nil.
    public func resourceInfo(_ id: ResourceID) -> ResourceInfo? {
        snapshot().first { $0.id == id }
    }

    /// The guest ranges attached to `id` (ATTACH_BACKING), in order: empty without backing, nil
    /// if no such resource. Guest DMA namespace: for inspection only (`vgpuctl show`), never an
    /// identity or a lookup key.
    public func backingEntries(of id: ResourceID) -> [BackingEntry]? {
        renderer.backingEntries(of: id)
    }

    /// What each head shows.
    public func scanoutStates() -> [Scanout] {
        scanouts.withLock { $0.scanouts }
    }

    /// The host copy of a resource, for tests and inspection.
    public func hostStorage(of id: ResourceID) -> HostPixelStorage? {
        renderer.hostStorage(of: id)
    }

    /// A new fd of the resource's host buffer for a consumer (vgpuctl export/dump,
    /// GET_SHARED_OBJECT), with what it is. The caller owns the fd.
    public func openHostBuffer(_ id: ResourceID) throws(GPUFailure) -> (fd: Int32, info: HostBufferInfo) {
        try renderer.openHostBuffer(id)
    }
}

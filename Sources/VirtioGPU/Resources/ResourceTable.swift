/// Host-side caps on what a guest may allocate (RESOURCE_CREATE_2D → ERR_OUT_OF_MEMORY past them).
public struct ResourceLimits: Equatable, Sendable {
    /// Largest host copy of one resource, in bytes.
    public var maxResourceBytes: UInt64
    /// Sum of all host copies of one device, in bytes.
    public var maxTotalBytes: UInt64
    /// Number of live resources of one device (each holds one memfd: mind RLIMIT_NOFILE).
    public var maxResources: Int

    public init(maxResourceBytes: UInt64, maxTotalBytes: UInt64, maxResources: Int) {
        self.maxResourceBytes = maxResourceBytes
        self.maxTotalBytes = maxTotalBytes
        self.maxResources = maxResources
    }
}

/// The resources of one device, by guest id, with the byte and count accounting the caps need.
struct ResourceTable {
    private(set) var resources: [ResourceID: Resource2D] = [:]
    private(set) var totalBytes: UInt64 = 0
    let limits: ResourceLimits

    init(limits: ResourceLimits) { self.limits = limits }

    subscript(id: ResourceID) -> Resource2D? {
        get { resources[id] }
    }

    /// Throws `outOfMemory` if one more resource of `bytes` would pass a cap.
    func checkCapacity(bytes: UInt64) throws(GPUFailure) {
        guard bytes <= limits.maxResourceBytes else {
            throw .outOfMemory("resource of \(bytes) bytes exceeds the per-resource cap of \(limits.maxResourceBytes)")
        }
        guard resources.count < limits.maxResources else {
            throw .outOfMemory("resource count cap \(limits.maxResources) reached")
        }
        guard bytes <= limits.maxTotalBytes, totalBytes <= limits.maxTotalBytes - bytes else {
            throw .outOfMemory("resource of \(bytes) bytes would pass the device cap of \(limits.maxTotalBytes) (in use: \(totalBytes))")
        }
    }

    mutating func insert(_ resource: Resource2D) {
        resources[resource.id] = resource
        totalBytes &+= UInt64(resource.storage.length)
    }

    @discardableResult
    mutating func remove(_ id: ResourceID) -> Resource2D? {
        guard let r = resources.removeValue(forKey: id) else { return nil }
        totalBytes &-= UInt64(r.storage.length)
        return r
    }

    mutating func setBacking(_ backing: BackingStore?, for id: ResourceID) {
        resources[id]?.backing = backing
    }

    /// Replaces a resource's host copy (same length) and export.
    mutating func setExport(_ export: ResourceExport?, storage: HostPixelStorage, for id: ResourceID) {
        resources[id]?.storage = storage
        resources[id]?.export = export
    }

    mutating func removeAll() {
        resources.removeAll()
        totalBytes = 0
    }
}

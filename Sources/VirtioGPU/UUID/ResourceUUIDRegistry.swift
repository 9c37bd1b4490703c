import SystemSupport
import VirtioCore

/// Who a UUID names: one resource of one device served by this process.
public struct ResourceOwner: Hashable, Sendable, CustomStringConvertible {
    public let device: GPUDeviceID
    public let resource: ResourceID

    public init(device: GPUDeviceID, resource: ResourceID) {
        self.device = device
        self.resource = resource
    }

    public var description: String { "\(device)/\(resource)" }
}

/// The process-wide map UUID → (device, resource), shared by every device the backend serves.
///
/// This is the cross-device lookup (design notes, sections 1 and 3): another device, `vgpuctl`
/// or QEMU's shared-object table asks by UUID and gets a device and resource, from which the
/// device hands out a host buffer. It holds no backing entries and no guest addresses.
/// Entries are removed on RESOURCE_UNREF and on device reset.
public final class ResourceUUIDRegistry: Sendable {
    private struct Tables {
        var byUUID: [ResourceUUID: ResourceOwner] = [:]
        var byOwner: [ResourceOwner: ResourceUUID] = [:]
    }

    private let tables = Mutex(Tables())
    private let makeUUID: @Sendable () -> ResourceUUID

    public convenience init() {
        self.init(makeUUID: { ResourceUUID.random() })
    }

    /// `makeUUID` is for tests (forced collisions); production uses `ResourceUUID.random()`.
    public init(makeUUID: @escaping @Sendable () -> ResourceUUID) {
        self.makeUUID = makeUUID
    }

    /// The UUID of `resource` on `device`: the one it already has, or a new one that no other
    /// resource of any device holds.
    public func assign(device: GPUDeviceID, resource: ResourceID) -> ResourceUUID {
        let owner = ResourceOwner(device: device, resource: resource)
        return tables.withLock { t in
            if let existing = t.byOwner[owner] { return existing }
            var uuid = makeUUID()
            // A v4 collision is astronomically unlikely, but the registry is what makes UUIDs
            // unique, so check rather than assume (bounded: a broken generator gives up below).
            var attempts = 0
            while t.byUUID[uuid] != nil, attempts < 64 {
                uuid = makeUUID()
                attempts += 1
            }
            if t.byUUID[uuid] != nil {
                // Generator keeps colliding: derive a distinct value rather than alias two resources.
                var g = SystemRandomNumberGenerator()
                repeat { uuid = ResourceUUID.random(using: &g) } while t.byUUID[uuid] != nil
            }
            t.byUUID[uuid] = owner
            t.byOwner[owner] = uuid
            return uuid
        }
    }

    /// The UUID already assigned to `resource` on `device`, if any.
    public func uuid(device: GPUDeviceID, resource: ResourceID) -> ResourceUUID? {
        tables.withLock { $0.byOwner[ResourceOwner(device: device, resource: resource)] }
    }

    /// Who `uuid` names, if anyone.
    public func lookup(_ uuid: ResourceUUID) -> ResourceOwner? {
        tables.withLock { $0.byUUID[uuid] }
    }

    /// Forgets the UUID of `resource` on `device` (RESOURCE_UNREF). Returns it, if there was one.
    @discardableResult
    public func unregister(device: GPUDeviceID, resource: ResourceID) -> ResourceUUID? {
        tables.withLock { t in
            guard let uuid = t.byOwner.removeValue(forKey: ResourceOwner(device: device, resource: resource)) else { return nil }
            t.byUUID.removeValue(forKey: uuid)
            return uuid
        }
    }

    /// Forgets every UUID of `device` (device reset, frontend gone). Returns how many.
    @discardableResult
    public func unregisterAll(device: GPUDeviceID) -> Int {
        tables.withLock { t in
            let owned = t.byOwner.filter { $0.key.device == device }
            for (owner, uuid) in owned {
                t.byOwner.removeValue(forKey: owner)
                t.byUUID.removeValue(forKey: uuid)
            }
            return owned.count
        }
    }

    /// Number of UUIDs currently assigned, over all devices.
    public var count: Int { tables.withLock { $0.byUUID.count } }
}

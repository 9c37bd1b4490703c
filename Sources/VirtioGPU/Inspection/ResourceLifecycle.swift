import SystemSupport
import VirtioCore

/// A UUID's life as the UUID observer sees it.
public enum ResourceUUIDChange: Equatable, Sendable {
    case assigned(ResourceID, ResourceUUID)
    case unreferenced(ResourceID, ResourceUUID)
}

/// One device's resource lifecycle bookkeeping, apart from command dispatch: when each
/// resource was created (its age, for snapshots), the lifecycle events for the control socket,
/// and the UUID observer (the vhost-user shared-object publisher). Touched on create, UUID
/// assignment, unref, reset and snapshots only: never per transfer or flush.
final class ResourceLifecycle: Sendable {
    let device: GPUDeviceID
    /// Lifecycle events (create, UUID assignment, unref) for the control socket; nil: none.
    let events: ResourceEventHub?
    /// Told when a UUID is first assigned and when a resource holding one is unreferenced.
    /// Called on the control-queue worker.
    private let uuidObserver = ReplaceableCallback<ResourceUUIDChange>()
    /// Creation times (wall clock) by resource.
    private let createdAt = Mutex<[ResourceID: Double]>([:])

    init(device: GPUDeviceID, events: ResourceEventHub?) {
        self.device = device
        self.events = events
    }

    /// Sets (nil: clears) the UUID observer.
    func setUUIDObserver(_ observer: (@Sendable (ResourceUUIDChange) -> Void)?) {
        uuidObserver.set(observer)
    }

    /// A resource was created (2D or 3D).
    func created(_ id: ResourceID) {
        let now = wallClockSeconds()
        createdAt.withLock { $0[id] = now }
        events?.publish(ResourceEvent(kind: .created, device: device, resource: id, time: now))
    }

    /// A resource got its first UUID.
    func uuidAssigned(_ id: ResourceID, _ uuid: ResourceUUID) {
        events?.publish(ResourceEvent(kind: .uuidAssigned, device: device, resource: id, uuid: uuid))
        uuidObserver(.assigned(id, uuid))
    }

    /// A resource was unreferenced; `uuid` is the one it held, if any.
    func unreferenced(_ id: ResourceID, uuid: ResourceUUID?) {
        createdAt.withLock { _ = $0.removeValue(forKey: id) }
        events?.publish(ResourceEvent(kind: .unreferenced, device: device, resource: id, uuid: uuid))
        if let uuid { uuidObserver(.unreferenced(id, uuid)) }
    }

    /// Every resource was dropped at once: one device-reset event if there were any. The UUID
    /// observer is not told.
    func deviceReset() {
        let hadResources = createdAt.withLock { t in
            defer { t.removeAll() }
            return !t.isEmpty
        }
        if hadResources { events?.publish(ResourceEvent(kind: .deviceReset, device: device)) }
    }

    /// Creation times by resource (absent: unknown).
    func creationTimes() -> [ResourceID: Double] {
        createdAt.withLock { $0 }
    }
}

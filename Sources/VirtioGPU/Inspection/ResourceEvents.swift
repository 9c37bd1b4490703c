import struct Synchronization.Atomic
import VirtioCore
import VhostUser
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// A resource or device lifecycle event, as `vgpuctl watch` shows it. Published only on
/// create, UUID assignment, unref, device reset and device connect/disconnect: never per
/// transfer or flush.
public struct ResourceEvent: Equatable, Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case created
        case uuidAssigned = "uuid-assigned"
        case unreferenced = "unref"
        /// Every resource of the device was dropped at once (device reset, frontend gone).
        case deviceReset = "device-reset"
        case deviceConnected = "device-connected"
        case deviceDisconnected = "device-disconnected"
    }

    public let kind: Kind
    public let device: GPUDeviceID
    public let resource: ResourceID?
    public let uuid: ResourceUUID?
    /// Wall-clock seconds since the epoch.
    public let time: Double

    public init(kind: Kind, device: GPUDeviceID, resource: ResourceID? = nil, uuid: ResourceUUID? = nil, time: Double = wallClockSeconds()) {
        self.kind = kind
        self.device = device
        self.resource = resource
        self.uuid = uuid
        self.time = time
    }
}

/// One subscriber's bounded queue. Events past `capacity` are dropped and counted; the
/// subscriber's eventfd becomes readable whenever events are waiting (for poll loops).
public final class ResourceEventSubscription: Sendable {
    private struct State {
        var events: [ResourceEvent] = []
        var dropped = 0
    }

    public let capacity: Int
    /// Readable (eventfd counter > 0) while events are queued. Drained by `take()`.
    public let wakeFD: OwnedFileDescriptor
    private let state = Mutex(State())
    fileprivate let key: UInt64
    private weak let hub: ResourceEventHub?

    fileprivate init(capacity: Int, key: UInt64, hub: ResourceEventHub, wakeFD: OwnedFileDescriptor) {
        self.capacity = capacity
        self.key = key
        self.hub = hub
        self.wakeFD = wakeFD
    }

    fileprivate func offer(_ event: ResourceEvent) {
        let queued = state.withLock { s -> Bool in
            guard s.events.count < capacity else { s.dropped += 1; return false }
            s.events.append(event)
            return true
        }
        if queued { EventFD.signal(wakeFD.rawValue) }
    }

    /// Takes every queued event and the number dropped since the last call.
    public func take() -> (events: [ResourceEvent], dropped: Int) {
        EventFD.drain(wakeFD.rawValue)
        return state.withLock { s in
            let r = (s.events, s.dropped)
            s.events.removeAll(keepingCapacity: true)
            s.dropped = 0
            return r
        }
    }

    /// Stops delivery. Also done on deinit.
    public func cancel() { hub?.remove(key) }

    deinit { hub?.remove(key) }
}

/// Fans lifecycle events out to subscribers (the control socket's `watch` clients). Publishing
/// with no subscribers is one atomic load.
public final class ResourceEventHub: Sendable {
    private let subscribers = Mutex<[UInt64: ResourceEventSubscription]>([:])
    private let subscriberCount = Atomic<Int>(0)
    private let nextKey = Atomic<UInt64>(0)

    public init() {}

    /// A new subscription holding at most `capacity` undelivered events.
    public func subscribe(capacity: Int = 1024) throws -> ResourceEventSubscription {
        let key = nextKey.add(1, ordering: .relaxed).newValue
        let sub = ResourceEventSubscription(capacity: max(1, capacity), key: key, hub: self, wakeFD: try EventFD.make())
        subscribers.withLock { s in
            s[key] = sub
            subscriberCount.store(s.count, ordering: .releasing)
        }
        return sub
    }

    fileprivate func remove(_ key: UInt64) {
        subscribers.withLock { s in
            s.removeValue(forKey: key)
            subscriberCount.store(s.count, ordering: .releasing)
        }
    }

    public var hasSubscribers: Bool { subscriberCount.load(ordering: .acquiring) > 0 }

    public func publish(_ event: @autoclosure () -> ResourceEvent) {
        guard hasSubscribers else { return }
        let e = event()
        let targets = subscribers.withLock { Array($0.values) }
        for t in targets { t.offer(e) }
    }
}

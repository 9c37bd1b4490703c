import SystemSupport
import VirtioCore

/// The devices this process serves right now, for the control socket. Each vhost-user
/// connection's device registers when the connection starts and unregisters on disconnect.
public final class DeviceDirectory: Sendable {
    public struct Entry: Sendable {
        public let id: GPUDeviceID
        /// Where the device is served (socket path, "fd N", a test name).
        public let label: String
        public let processor: GPUCommandProcessor
        /// Wall-clock seconds since the epoch.
        public let connectedAt: Double
        /// Asks the device's frontend for a UUID no device of this process owns (vhost-user
        /// SHARED_OBJECT_LOOKUP); nil when the device cannot or may not ask. Returns an fd the
        /// caller owns, or nil.
        public let lookupForeign: (@Sendable (ResourceUUID) -> Int32?)?
    }

    public let events = ResourceEventHub()
    private let entries = Mutex<[GPUDeviceID: Entry]>([:])

    public init() {}

    public func register(_ processor: GPUCommandProcessor, label: String, lookupForeign: (@Sendable (ResourceUUID) -> Int32?)? = nil) {
        let e = Entry(id: processor.deviceID, label: label, processor: processor, connectedAt: wallClockSeconds(), lookupForeign: lookupForeign)
        entries.withLock { $0[e.id] = e }
        events.publish(ResourceEvent(kind: .deviceConnected, device: e.id, time: e.connectedAt))
    }

    public func unregister(_ id: GPUDeviceID) {
        let removed = entries.withLock { $0.removeValue(forKey: id) }
        if removed != nil { events.publish(ResourceEvent(kind: .deviceDisconnected, device: id)) }
    }

    /// Every registered device, by id.
    public func devices() -> [Entry] {
        entries.withLock { Array($0.values) }.sorted { $0.id < $1.id }
    }

    public func device(_ id: GPUDeviceID) -> Entry? {
        entries.withLock { $0[id] }
    }
}

import ControlProtocol
import SystemSupport
import VirtioCore

/// The control socket's lifecycle events a holder cares about (`watch`).
public struct ResolveEvent: Equatable, Sendable {
    /// "unref", "device-reset", "device-disconnected" (and the other kinds: "created",
    /// "uuid-assigned", "device-connected", "dropped").
    public var kind: String
    public var device: UInt32
    public var resource: UInt32?
    public var uuid: ResourceUUID?
    /// Events the server dropped before this one (its queue was full): a holder must then
    /// assume anything may have gone.
    public var dropped: Int
}

/// A `watch` subscription on its own connection. Poll `fileDescriptor` for input, then call
/// `events()`; an error means the connection is gone (the backend exited or dropped us).
public final class ResolveWatch: Sendable {
    public let path: String
    private let connection: Mutex<ControlClient>
    /// Readable when event lines are waiting.
    public let fileDescriptor: Int32

    public init(path: String, timeout: Double = 2) throws(ResolveError) {
        self.path = path
        let c = try ControlClient(resolvingThrough: path)
        do { _ = try c.call(.watch, timeout: timeout) } catch { throw ResolveError(error, path: path) }
        fileDescriptor = c.fileDescriptor
        connection = Mutex(c)
    }

    /// Every event already received, reading what the socket has without blocking.
    public func events() throws(ResolveError) -> [ResolveEvent] {
        let path = self.path
        return try connection.withLock { c throws(ResolveError) -> [ResolveEvent] in
            let events: [EventRecord]
            do throws(ControlClientError) { events = try c.pendingEvents() } catch { throw ResolveError(error, path: path) }
            return events.map { e in
                ResolveEvent(kind: e.kind, device: e.device, resource: e.resource, uuid: e.uuid.flatMap(ResourceUUID.init(string:)), dropped: e.dropped ?? 0)
            }
        }
    }
}

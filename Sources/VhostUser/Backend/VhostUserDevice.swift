import VirtioCore
import SystemSupport

/// What a device answers to a device-specific vhost-user request.
public enum DeviceRequestOutcome: Sendable {
    /// Handled; no reply body (REPLY_ACK, if asked for, says success).
    case done
    /// Handled; send this payload back as the reply.
    case reply([UInt8])
}

/// The one protocol a device implements to be served over vhost-user (vhost-user-backend's
/// `VhostUserBackend` trait, in Swift). Optional methods default to "unsupported"/no-op.
///
/// Queue handlers run on that queue's worker thread; everything else on the connection thread.
public protocol VhostUserDevice: AnyObject, Sendable {
    /// Number of virtqueues (virtio-gpu: control and cursor).
    var queueCount: Int { get }
    /// Largest queue size accepted in SET_VRING_NUM.
    var maxQueueSize: UInt16 { get }
    /// Device feature bits offered in GET_FEATURES (the server adds the transport bits).
    var deviceFeatures: UInt64 { get }
    /// Protocol features the device needs beyond the server's own (e.g. CONFIG).
    var protocolFeatures: VhostUserProtocolFeatures { get }

    /// Config space read (GET_CONFIG). nil: out of range.
    func readConfig(offset: Int, count: Int) -> [UInt8]?
    /// Config space write (SET_CONFIG). false: refused.
    func writeConfig(offset: Int, bytes: [UInt8]) -> Bool
    /// The features the driver acknowledged (SET_FEATURES).
    func featuresNegotiated(_ features: UInt64)
    /// Handles one chain popped from `queue`; returns the number of bytes written into it, or
    /// `deferredCompletion`: the device has kept the chain's head and will hand it back later
    /// through the queue's `QueueCompletions` (virgl fences). Must never trap on what the chain holds.
    func handleChain(queue: Int, chain: DescriptorChain, memory: GuestMemory) -> UInt32
    /// A queue's worker started: chains deferred on it are returned through `completions`
    /// (valid until the worker stops; a stopped worker ignores late completions).
    func queueStarted(_ queue: Int, completions: QueueCompletions)
    /// `queue`'s worker handled every chain available and re-enabled kicks: work the device
    /// put off until the driver stops sending (a frame owed without a flush) can run now.
    func queueIdle(_ queue: Int)
    /// A request the generic server does not know (GPU_SET_SOCKET, ...).
    func handleDeviceRequest(_ request: UInt32, payload: [UInt8], fds: [OwnedFileDescriptor]) throws(VhostUserMessageError) -> DeviceRequestOutcome
    /// Called on the connection thread before queue workers are stopped, so the device can
    /// abort waits (display replies) a worker may be blocked in.
    func willStopQueues()
    /// Called after the workers were stopped (GET_VRING_BASE, reset, disconnect) to re-arm.
    func didStopQueues()
    /// RESET_DEVICE / RESET_OWNER: back to the state after construction.
    func reset()
    /// The frontend went away: release everything this connection owned.
    func disconnected()
    /// SET_BACKEND_REQ_FD gave a new backend channel (nil: the connection is going away). Called
    /// on the connection thread; the device may keep the channel and send on it from its workers.
    func backendChannelChanged(_ channel: BackendRequestChannel?)
    /// GET_SHARED_OBJECT: an fd for the object `uuid` (16 bytes) this device exported, sent to the
    /// frontend by SCM_RIGHTS and closed afterwards. nil: unknown (the reply carries no fd).
    func sharedObject(uuid: [UInt8]) -> OwnedFileDescriptor?
}

/// `handleChain`'s answer for a chain the device returns later.
public let deferredCompletion = UInt32.max

extension VhostUserDevice {
    public func queueStarted(_ queue: Int, completions: QueueCompletions) {}
    public func queueIdle(_ queue: Int) {}
    public var protocolFeatures: VhostUserProtocolFeatures { [] }
    public func readConfig(offset: Int, count: Int) -> [UInt8]? { nil }
    public func writeConfig(offset: Int, bytes: [UInt8]) -> Bool { false }
    public func featuresNegotiated(_ features: UInt64) {}
    public func handleDeviceRequest(_ request: UInt32, payload: [UInt8], fds: [OwnedFileDescriptor]) throws(VhostUserMessageError) -> DeviceRequestOutcome {
        throw .unsupported(request: VhostUserRequest(rawValue: request)?.name ?? "request \(request)")
    }
    public func willStopQueues() {}
    public func didStopQueues() {}
    public func reset() {}
    public func disconnected() {}
    public func backendChannelChanged(_ channel: BackendRequestChannel?) {}
    public func sharedObject(uuid: [UInt8]) -> OwnedFileDescriptor? { nil }
}

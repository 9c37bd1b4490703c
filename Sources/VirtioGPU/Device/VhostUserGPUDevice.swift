import CShims
import DisplayChannel
import Logging
import struct Synchronization.Atomic
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// virtio-gpu served over vhost-user: queue 0 is the control queue, queue 1 the cursor queue
/// (virtio 1.2, 5.7.2). This is only glue: commands are the processor's business, the display
/// socket is DisplayChannel's.
public final class VhostUserGPUDevice: VhostUserDevice {
    public static let controlQueue = 0
    public static let cursorQueue = 1

    public let processor: GPUCommandProcessor
    private let logger: Logger
    /// QEMU's display channel and the mailbox in front of it (what the processor draws to).
    private let display = Mutex<(channel: VhostUserGPUDisplay, mailbox: MailboxDisplay)?>(nil)
    /// virtio_gpu_config.events_read; bits cleared through events_clear.
    private let eventsRead = Atomic<UInt32>(0)

    public let queueCount = 2
    public let maxQueueSize: UInt16 = 1024
    public var deviceFeatures: UInt64 {
        (1 << UInt64(VIRTIO_GPU_F_EDID)) | (1 << UInt64(VIRTIO_GPU_F_RESOURCE_UUID))
            | (processor.renderer3D != nil ? 1 << UInt64(VIRTIO_GPU_F_VIRGL) : 0)
    }
    /// CONFIG, and SHARED_OBJECT (QEMU >= 8.2): UUIDs are published on the backend channel.
    public var protocolFeatures: VhostUserProtocolFeatures { [.config, .sharedObject] }

    /// The backend channel, when the frontend gave one, and the UUIDs published on it (removed
    /// again on unref, reset and disconnect).
    private let sharedObjects = Mutex<(channel: BackendRequestChannel?, published: Set<ResourceUUID>)>((nil, []))

    private let directory: DeviceDirectory?
    /// How each display channel QEMU hands over is driven (reply bounds).
    private let displayOptions: VhostUserGPUDisplay.Options
    /// Re-shows the heads after each GPU_SET_SOCKET, one refresh at a time (issue 11 §3.3).
    private let refresher: CoalescedRefresh
    /// Refresh threads started so far (tests: a GPU_SET_SOCKET flood starts few).
    public var refreshThreadsStarted: Int { refresher.threadsStarted }

    /// With a `directory`, the device is listed there (for the control socket) from now until
    /// the frontend disconnects; `label` says where it is served. With `sharedObjectLookup`,
    /// UUIDs no device of this process owns are asked of the frontend (SHARED_OBJECT_LOOKUP):
    /// off by default because it finds nothing today. Measured with QEMU 10.0.2 (2026-12): a
    /// LOOKUP of a UUID another vhost-user backend ADDed (acked 0) is answered -22 (EINVAL)
    /// with no fd, and QEMU does not abort. Read, not measured: hw/display/virtio-dmabuf.c keeps
    /// the caller's `QemuUUID *` as its hash key without copying it, so every key dangles.
    public init(processor: GPUCommandProcessor, logger: Logger, directory: DeviceDirectory? = nil, label: String = "",
                sharedObjectLookup: Bool = false, displayOptions: VhostUserGPUDisplay.Options = .init()) {
        self.displayOptions = displayOptions
        self.processor = processor
        refresher = CoalescedRefresh { [processor] in processor.refreshDisplay() }
        self.logger = logger
        self.directory = directory
        // The closure holds the device weakly: the directory must not keep it alive.
        final class WeakDevice: Sendable { weak let device: VhostUserGPUDevice?; init(_ d: VhostUserGPUDevice) { device = d } }
        let lookup: (@Sendable (ResourceUUID) -> Int32?)?
        if sharedObjectLookup {
            let weakSelf = WeakDevice(self)
            lookup = { uuid in weakSelf.device?.lookupForeign(uuid) }
        } else {
            lookup = nil
        }
        directory?.register(processor, label: label, lookupForeign: lookup)
        // Weak: the processor outlives nothing of ours, but must not keep the device alive.
        processor.setUUIDObserver { [weak self] change in self?.uuidChanged(change) }
    }

    // MARK: shared objects (vhost-user SHARED_OBJECT)

    public func backendChannelChanged(_ channel: BackendRequestChannel?) {
        sharedObjects.withLock { $0.channel = channel }
    }

    /// On the control-queue worker: ADD on first assignment, REMOVE on unref, each waiting a
    /// bounded time for the frontend's ack.
    private func uuidChanged(_ change: GPUCommandProcessor.UUIDChange) {
        let (request, uuid): (VhostUserBackendRequest, ResourceUUID)
        switch change {
        case let .assigned(_, u): (request, uuid) = (.sharedObjectAdd, u)
        case let .unreferenced(_, u): (request, uuid) = (.sharedObjectRemove, u)
        }
        let channel = sharedObjects.withLock { s -> BackendRequestChannel? in
            guard s.channel != nil else { return nil }
            if request == .sharedObjectAdd { s.published.insert(uuid) } else if s.published.remove(uuid) == nil { return nil }
            return s.channel
        }
        guard let channel else { return }
        let outcome = channel.send(request, payload: uuid.bytes, waitForAck: true)
        if outcome != .ok { logger.warning("\(request.name) \(uuid): \(outcome)") }
    }

    /// Reset and disconnect: REMOVE for every UUID published, without waiting for acks (this
    /// runs on the connection thread, where QEMU may be waiting for our reply).
    private func withdrawAll() {
        let (channel, published) = sharedObjects.withLock { s in
            defer { s.published.removeAll() }
            return (s.channel, s.published)
        }
        guard let channel else { return }
        for uuid in published { channel.send(.sharedObjectRemove, payload: uuid.bytes, waitForAck: false) }
    }

    /// GET_SHARED_OBJECT: the resource's exported host buffer (a dmabuf where the host makes
    /// them, else a read-only reopen of the sealed memfd), for UUIDs of this device.
    public func sharedObject(uuid bytes: [UInt8]) -> OwnedFileDescriptor? {
        guard let uuid = ResourceUUID(bytes: bytes), let owner = processor.uuids.lookup(uuid), owner.device == processor.deviceID
        else { return nil }
        do { return OwnedFileDescriptor(try processor.openHostBuffer(owner.resource).fd) } catch {
            logger.warning("GET_SHARED_OBJECT \(uuid): \(error)")
            return nil
        }
    }

    /// SHARED_OBJECT_LOOKUP on this device's backend channel: an fd (the caller owns it) if the
    /// frontend knows the UUID. Runs on the control socket's thread, never on the connection's.
    func lookupForeign(_ uuid: ResourceUUID) -> Int32? {
        guard processor.uuids.lookup(uuid) == nil, let channel = sharedObjects.withLock({ $0.channel }) else { return nil }
        switch channel.lookup(uuid: uuid.bytes) {
        case let .found(fd):
            let raw = dup(fd.rawValue)
            return raw >= 0 ? raw : nil
        case let .notFound(status):
            logger.debug("SHARED_OBJECT_LOOKUP \(uuid): not found (status \(status))")
            return nil
        case .noAnswer:
            logger.warning("SHARED_OBJECT_LOOKUP \(uuid): no answer; backend channel given up")
            return nil
        }
    }

    // MARK: config space (struct virtio_gpu_config: events_read, events_clear, num_scanouts, num_capsets)

    private func configBytes() -> [UInt8] {
        ByteWriter().u32(eventsRead.load(ordering: .acquiring)).u32(0).u32(processor.numScanouts).u32(processor.numCapsets).bytes
    }

    public func readConfig(offset: Int, count: Int) -> [UInt8]? {
        let config = configBytes()
        guard offset >= 0, count >= 0, offset <= config.count, count <= config.count - offset else { return nil }
        return Array(config[offset..<offset + count])
    }

    public func writeConfig(offset: Int, bytes: [UInt8]) -> Bool {
        // Only events_clear (offset 4, 4 bytes) is writable by the driver.
        guard offset == 4, bytes.count == 4 else { return false }
        let clear = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        _ = eventsRead.bitwiseAnd(~clear, ordering: .acquiringAndReleasing)
        return true
    }

    // MARK: queues

    public func queueStarted(_ queue: Int, completions: QueueCompletions) {
        if queue == Self.controlQueue { processor.setControlCompletions(completions) }
    }

    public func queueIdle(_ queue: Int) {
        if queue == Self.controlQueue { processor.controlQueueIdle() }
    }

    public func handleChain(queue: Int, chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        queue == Self.cursorQueue ? processor.handleCursor(chain, memory: memory) : processor.handleControl(chain, memory: memory)
    }

    // MARK: vhost-user-gpu requests

    public func handleDeviceRequest(_ request: UInt32, payload: [UInt8], fds: [OwnedFileDescriptor]) throws(VhostUserMessageError) -> DeviceRequestOutcome {
        guard request == VhostUserRequest.gpuSetSocket.rawValue else {
            throw .unsupported(request: VhostUserRequest(rawValue: request)?.name ?? "request \(request)")
        }
        let name = VhostUserRequest.gpuSetSocket.name
        guard payload.isEmpty else { throw .badSize(request: name, got: payload.count, expected: "0") }
        guard fds.count == 1 else { throw .badFDCount(request: name, got: fds.count, expected: 1) }
        // Our own dup: the message's fd object closes its copy when the message is dropped.
        let fd = dup(fds[0].rawValue)
        guard fd >= 0 else { throw .failed(request: name, "dup: errno \(errno)") }
        let channel: VhostUserGPUDisplay
        do { channel = try VhostUserGPUDisplay(socket: .init(rawValue: fd), options: displayOptions, logger: logger) } catch {
            throw .failed(request: name, "display channel: \(error)")
        }
        // Flushes return once their frame is in the mailbox; its sender thread feeds the channel.
        let mailbox = MailboxDisplay(inner: channel)
        let old = display.withLock { d in
            let old = d
            d = (channel, mailbox)
            return old
        }
        processor.setDisplay(mailbox)
        if let old {
            old.channel.close()   // cuts the old sender's send short
            old.mailbox.close()
        }
        logger.info("display channel connected")
        // Re-show the heads on the new channel, off this thread: QEMU reads the display socket
        // only once it is back in its main loop, after the rest of the start sequence.
        refresher.request()
        return .done
    }

    public func willStopQueues() {
        // Fenced virgl commands in flight go back before the rings are handed over (bounded:
        // QEMU waits for our GET_VRING_BASE reply meanwhile).
        processor.renderer3D?.drainFences(timeout: 1.0)
        display.withLock { $0 }?.channel.interrupt()
        sharedObjects.withLock { $0.channel }?.interrupt()
    }
    public func didStopQueues() { display.withLock { $0 }?.channel.resume() }

    public func reset() {
        processor.reset()
        withdrawAll()
    }

    public func disconnected() {
        processor.reset()
        withdrawAll()
        directory?.unregister(processor.deviceID)
        processor.setDisplay(NullDisplay())
        let old = display.withLock { d in
            defer { d = nil }
            return d
        }
        old?.channel.close()
        old?.mailbox.close()
    }
}

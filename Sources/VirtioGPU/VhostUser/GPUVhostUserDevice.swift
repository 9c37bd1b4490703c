import CShims
import DisplayChannel
import Logging
import Synchronization
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

/// virtio-gpu served over vhost-user: queue 0 is the control queue, queue 1 the cursor queue
/// (virtio 1.2, 5.7.2). This is only glue: commands are the processor's business, the display
/// socket is DisplayChannel's.
public final class GPUVhostUserDevice: VhostUserDevice {
    public static let controlQueue = 0
    public static let cursorQueue = 1

    public let processor: GPUCommandProcessor
    private let logger: Logger
    private let display = Mutex<VhostUserGPUDisplay?>(nil)
    /// virtio_gpu_config.events_read; bits cleared through events_clear.
    private let eventsRead = Atomic<UInt32>(0)

    public let queueCount = 2
    public let maxQueueSize: UInt16 = 1024
    public var deviceFeatures: UInt64 { (1 << UInt64(VIRTIO_GPU_F_EDID)) | (1 << UInt64(VIRTIO_GPU_F_RESOURCE_UUID)) }
    public var protocolFeatures: VhostUserProtocolFeatures { [.config] }

    private let directory: DeviceDirectory?

    /// With a `directory`, the device is listed there (for the control socket) from now until
    /// the frontend disconnects; `label` says where it is served.
    public init(processor: GPUCommandProcessor, logger: Logger, directory: DeviceDirectory? = nil, label: String = "") {
        self.processor = processor
        self.logger = logger
        self.directory = directory
        directory?.register(processor, label: label)
    }

    // MARK: config space (struct virtio_gpu_config: events_read, events_clear, num_scanouts, num_capsets)

    private func configBytes() -> [UInt8] {
        WireWriter().u32(eventsRead.load(ordering: .acquiring)).u32(0).u32(processor.numScanouts).u32(0).bytes
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
        do { channel = try VhostUserGPUDisplay(socket: .init(rawValue: fd), logger: logger) } catch {
            throw .failed(request: name, "display channel: \(error)")
        }
        let old = display.withLock { d -> VhostUserGPUDisplay? in
            let old = d
            d = channel
            return old
        }
        old?.close()
        processor.setDisplay(channel)
        logger.info("display channel connected")
        // Re-show the heads on the new channel, off this thread: QEMU reads the display socket
        // only once it is back in its main loop, after the rest of the start sequence.
        let processor = self.processor
        startThread(name: "vgpu-refresh") { processor.refreshDisplay() }
        return .done
    }

    public func willStopQueues() { display.withLock { $0 }?.interrupt() }
    public func didStopQueues() { display.withLock { $0 }?.resume() }

    public func reset() {
        processor.reset()
    }

    public func disconnected() {
        processor.reset()
        directory?.unregister(processor.deviceID)
        processor.setDisplay(NullDisplay())
        display.withLock { d in d?.close(); d = nil }
    }
}

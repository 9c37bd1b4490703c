import CShims
import DisplayChannel
import HostBuffers
import Logging
import struct Synchronization.Atomic
import SystemSupport
import VhostUser
import VirtioCore

/// The virtio-gpu device logic (virtio 1.2 section 5.7), 2D: decodes each request from a
/// descriptor chain, checks it, runs it against the renderer, scanouts, cursor and UUID registry,
/// and writes the response. No sockets: the vhost-user glue calls `handleControl` from the
/// control-queue worker and `handleCursor` from the cursor-queue worker.
///
/// This file is the dispatch (decode, run, respond); the commands themselves are in
/// `GPUCommandProcessor+Resources`, `+Scanout` and `+Cursor`, what they send to the display in
/// `+Display`, and what the control socket reads (snapshots, ages, lifecycle events, the UUID
/// observer) under `Inspection/`.
///
/// Every guest input is checked; a bad request gets its `VIRTIO_GPU_RESP_ERR_*` response and a
/// rate-limited log line, and processing goes on. Error codes:
///
/// | case | response |
/// |---|---|
/// | request shorter than its header | ERR_INVALID_PARAMETER, zeroed header (QEMU's backend) |
/// | request shorter than its command struct, ATTACH_BACKING entries missing | ERR_INVALID_PARAMETER, nothing executed |
/// | writable part smaller than the OK response | nothing executed, nothing written, returns 0 |
/// | 3D, capset, blob commands; cursor commands on the control queue; unknown types | ERR_UNSPEC |
/// | CREATE_2D id 0 or in use; unknown id anywhere | ERR_INVALID_RESOURCE_ID |
/// | CREATE_2D unknown format, zero size | ERR_INVALID_PARAMETER |
/// | CREATE_2D past `maxResourceBytes`/`maxTotalBytes`/`maxResources`, allocation failure | ERR_OUT_OF_MEMORY |
/// | SET_SCANOUT / GET_EDID scanout ≥ `numScanouts` | ERR_INVALID_SCANOUT_ID |
/// | SET_SCANOUT empty rect or rect outside the resource; FLUSH / TRANSFER rect outside | ERR_INVALID_PARAMETER |
/// | TRANSFER backing smaller than offset + stride·(h−1) + w·4 | ERR_INVALID_PARAMETER |
/// | TRANSFER or DETACH without backing; ATTACH on a resource with backing | ERR_UNSPEC (QEMU) |
/// | ATTACH nr_entries 0 or > `maxBackingEntries`; entry empty, wrapping or outside guest RAM | ERR_INVALID_PARAMETER |
///
/// Threading: state shared by the two workers (scanouts, display, cursor image, resource table
/// inside the renderer) sits behind `Mutex`es; no lock is held while calling out to the display
/// except the scanout table's, which only the control worker, `reset` and `snapshot` take.
/// `reset` is meant to run with both queues stopped.
public final class GPUCommandProcessor: Sendable {
    /// The normalized configuration in use.
    public let config: GPUDeviceConfig
    public let deviceID: GPUDeviceID
    public let uuids: ResourceUUIDRegistry
    public let renderer: any GPURenderer
    /// The same renderer when it runs virgl (VIRTIO_GPU_F_VIRGL offered), else nil.
    public let renderer3D: (any GPURenderer3D)?
    /// Where fenced control-queue chains go back once their fence signals (set when the
    /// control queue's worker starts).
    private let controlCompletions = Mutex<QueueCompletions?>(nil)
    /// The cursor image a 3D renderer reads back into, off the control queue's path (a 2D
    /// renderer fills `cursorImage` under its lock instead).
    let cursorBuffer = CursorBuffer()

    let logger: Logger
    let guestErrors: GuestErrorLog
    private let displayBox: Mutex<any DisplaySink>
    let scanouts: Mutex<ScanoutTable>
    /// What the last GET_DISPLAY_INFO told the guest, when the display answered (used by GET_EDID).
    let reportedModes = Mutex<[DisplayMode]?>(nil)
    let cursorImage = Mutex(CursorBuffer())
    /// Ages, lifecycle events and the UUID observer (Inspection/ResourceLifecycle.swift).
    let lifecycle: ResourceLifecycle
    /// Lifecycle events (create, UUID assignment, unref) for the control socket; nil: none.
    public var events: ResourceEventHub? { lifecycle.events }
    /// Set when the display did not answer a DMABUF_UPDATE: every head goes back to pixel
    /// updates for the rest of this device's life (logged once).
    let dmabufScanoutGivenUp = Atomic<Bool>(false)

    /// A device with the 2D renderer, exporting resources as `hostBuffers` allows.
    public convenience init(config: GPUDeviceConfig, display: any DisplaySink, uuids: ResourceUUIDRegistry,
                            deviceID: GPUDeviceID, hostBuffers: HostBufferAllocator = .memfdOnly,
                            events: ResourceEventHub? = nil, logger: Logger = Logger(label: "vgpu.gpu")) {
        let c = config.normalized
        self.init(config: c, display: display, uuids: uuids, deviceID: deviceID,
                  renderer: Renderer2D(limits: c.limits, hostBuffers: hostBuffers), events: events, logger: logger)
    }

    /// A device with a given renderer (virgl later, a recording renderer in tests).
    public init(config: GPUDeviceConfig, display: any DisplaySink, uuids: ResourceUUIDRegistry,
                deviceID: GPUDeviceID, renderer: any GPURenderer, events: ResourceEventHub? = nil, logger: Logger = Logger(label: "vgpu.gpu")) {
        let c = config.normalized
        self.lifecycle = ResourceLifecycle(device: deviceID, events: events)
        self.config = c
        self.deviceID = deviceID
        self.uuids = uuids
        self.renderer = renderer
        self.renderer3D = renderer as? any GPURenderer3D
        self.logger = logger
        self.guestErrors = GuestErrorLog(logger: logger, perSecond: c.guestErrorLogsPerSecond)
        self.displayBox = Mutex(display)
        self.scanouts = Mutex(ScanoutTable(count: Int(c.numScanouts)))
    }

    /// A UUID's life as the UUID observer sees it.
    public typealias UUIDChange = ResourceUUIDChange

    /// Sets (nil: clears) the UUID observer, told when a UUID is first assigned and when a
    /// resource holding one is unreferenced (the vhost-user shared-object publisher). Called on
    /// the control-queue worker; never per frame. Reset drops UUIDs without telling it.
    public func setUUIDObserver(_ observer: (@Sendable (UUIDChange) -> Void)?) {
        lifecycle.setUUIDObserver(observer)
    }

    /// `virtio_gpu_config.num_scanouts`.
    public var numScanouts: UInt32 { config.numScanouts }
    /// `virtio_gpu_config.num_capsets`: the 3D renderer's capsets, 0 without virgl.
    public var numCapsets: UInt32 { UInt32(renderer3D?.capsets.count ?? 0) }

    /// The control queue's worker started: fenced chains go back through `completions`.
    public func setControlCompletions(_ completions: QueueCompletions?) {
        controlCompletions.withLock { $0 = completions }
    }

    /// Replaces the display (QEMU hands over the display socket after start).
    public func setDisplay(_ display: any DisplaySink) {
        displayBox.withLock { $0 = display }
    }

    var display: any DisplaySink { displayBox.withLock { $0 } }

    // MARK: control queue

    /// Handles one control-queue chain: decodes the request, executes it, writes the response.
    /// Returns the bytes written to the chain (the used-ring length); 0 if nothing could be written.
    public func handleControl(_ chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        var reader = ChainReader(chain: chain, memory: memory)
        var writer = ChainWriter(chain: chain, memory: memory)
        let request: virtio_gpu_ctrl_hdr
        do {
            request = try GPUCommand.peekHeader(reader)
        } catch {
            // QEMU's backend answers a short header with ERR_INVALID_PARAMETER and a zeroed header.
            guestErrors.report(command: 0, code: error.error.responseType, "control queue: \(error.detail)")
            return respond(.error(.invalidParameter), echoing: virtio_gpu_ctrl_hdr(), &writer)
        }
        let needed = GPUCommand.responseSize(forType: request.type)
        guard writer.available >= needed else {
            guestErrors.report(command: request.type, code: 0,
                               "\(GPUCommand.name(forType: request.type)): response buffer holds \(writer.available) bytes, needs \(needed): not executed")
            return 0
        }
        let response: GPUResponse
        do {
            let command = try GPUCommand.decode(&reader, maxBackingEntries: config.maxBackingEntries, virgl: renderer3D != nil)
            logger.trace("\(command.name)")
            response = try execute(command, memory: memory)
        } catch {
            guestErrors.report(command: request.type, code: error.error.responseType,
                               "\(GPUCommand.name(forType: request.type)): \(error)")
            response = .error(error.error)
        }
        let written = respond(response, echoing: request, &writer)
        return deferUntilFence(request, head: chain.head, written: written)
    }

    /// With virgl, a fenced command (VIRTIO_GPU_FLAG_FENCE) goes back to the guest only once a
    /// fence created after it signals (after everything submitted before it has run); commands
    /// without a fence are never held behind it. Without virgl every command is complete when
    /// it returns, so its response is its fence.
    private func deferUntilFence(_ request: virtio_gpu_ctrl_hdr, head: UInt16, written: UInt32) -> UInt32 {
        guard request.flags & UInt32(VIRTIO_GPU_FLAG_FENCE) != 0, let r3 = renderer3D,
              let completions = controlCompletions.withLock({ $0 }) else { return written }
        do {
            try r3.createFence(request.fence_id, context: request.ctx_id) { completions.complete(head: head, length: written) }
            return deferredCompletion
        } catch {
            guestErrors.report(command: request.type, code: error.error.responseType, "fence \(request.fence_id): \(error); answered at once")
            return written
        }
    }

    private func respond(_ response: GPUResponse, echoing request: virtio_gpu_ctrl_hdr, _ writer: inout ChainWriter) -> UInt32 {
        do {
            return UInt32(try response.encode(echoing: request, into: &writer))
        } catch {
            // A body that does not fit (GET_CAPSET into a short buffer): the error, if that fits.
            if response.size > MemoryLayout<virtio_gpu_ctrl_hdr>.size,
               let n = try? GPUResponse.error(.invalidParameter).encode(echoing: request, into: &writer) {
                guestErrors.report(command: request.type, code: GPUError.invalidParameter.responseType,
                                   "\(GPUCommand.name(forType: request.type)): response of \(response.size) bytes does not fit \(writer.available + n)")
                return UInt32(n)
            }
            guestErrors.report(command: request.type, code: response.type,
                               "\(GPUCommand.name(forType: request.type)): response not written: \(error)")
            return 0
        }
    }

    /// Runs one decoded command. Every guest buffer and parameter is checked before any side effect.
    func execute(_ command: GPUCommand, memory: GuestMemory) throws(GPUFailure) -> GPUResponse {
        switch command {
        case .getDisplayInfo:
            return .okDisplayInfo(GPUResponse.displayInfo(displayModes()))
        case let .getEDID(c):
            return try getEDID(scanout: c.scanout)
        case let .resourceCreate2D(c):
            try createResource2D(c)
        case let .resourceUnref(c):
            try unrefResource(ResourceID(c.resource_id))
        case let .setScanout(c):
            try setScanout(c, memory: memory)
        case let .resourceFlush(c):
            try flushResource(ResourceID(c.resource_id), rect: PixelRect(c.r))
        case let .transferToHost2D(c):
            pullDeferredPixels(of: ResourceID(c.resource_id))
            try renderer.transferToHost2D(ResourceID(c.resource_id), rect: PixelRect(c.r), offset: c.offset, memory: memory)
        case let .resourceAttachBacking(c, entries):
            let id = ResourceID(c.resource_id)
            guard renderer.geometry(of: id) != nil else { throw .invalidResourceID("\(id) does not exist") }
            let backing = try BackingStore(validating: entries, memory: memory)
            try renderer.attachBacking(id, backing, memory: memory)
        case let .resourceDetachBacking(c):
            try renderer.detachBacking(ResourceID(c.resource_id))
        case let .resourceAssignUUID(c):
            return .okResourceUUID(try assignUUID(c, memory: memory))
        case .updateCursor, .moveCursor:
            // QEMU: cursor commands on the control queue fall to the default case, ERR_UNSPEC.
            throw .unspec("cursor command on the control queue")
        case .getCapsetInfo, .getCapset, .ctxCreate, .ctxDestroy, .ctxAttachResource, .ctxDetachResource,
             .resourceCreate3D, .transferToHost3D, .transferFromHost3D, .submit3D:
            guard let r3 = renderer3D else { throw .unspec("\(command.name): virgl is not on") }
            return try execute3D(command, r3)
        case .notSupported:
            throw .unspec("not supported: \(renderer3D == nil ? "virgl and " : "")blob resources are not offered")
        case let .unknown(type):
            throw .unspec("unknown command type 0x\(String(type, radix: 16))")
        }
        return .okNoData
    }

    // MARK: 3D commands

    private func execute3D(_ command: GPUCommand, _ r3: any GPURenderer3D) throws(GPUFailure) -> GPUResponse {
        switch command {
        case let .getCapsetInfo(c):
            let index = Int(c.capset_index)
            guard index < r3.capsets.count else { throw .invalidParameter("capset index \(c.capset_index) ≥ \(r3.capsets.count)") }
            let info = r3.capsets[index]
            return .okCapsetInfo(id: info.id, maxVersion: info.maxVersion, maxSize: info.maxSize)
        case let .getCapset(c):
            return .okCapset(try r3.capset(id: c.capset_id, version: c.capset_version))
        case let .ctxCreate(c):
            let length = min(Int(c.nlen), 64)
            let name = withUnsafeBytes(of: c.debug_name) { String(decoding: $0.prefix(length).prefix { $0 != 0 }, as: UTF8.self) }
            try r3.createContext(c.hdr.ctx_id, name: name, contextInit: c.context_init)
        case let .ctxDestroy(h):
            try r3.destroyContext(h.ctx_id)
        case let .ctxAttachResource(c):
            try r3.attachResource(ResourceID(c.resource_id), toContext: c.hdr.ctx_id)
        case let .ctxDetachResource(c):
            try r3.detachResource(ResourceID(c.resource_id), fromContext: c.hdr.ctx_id)
        case let .resourceCreate3D(c):
            let id = ResourceID(c.resource_id)
            guard renderer.geometry(of: id) == nil else { throw .invalidResourceID("\(id) already exists") }
            try r3.createResource3D(c)
            lifecycle.created(id)
        case let .transferToHost3D(t):
            try r3.transferToHost3D(t, context: t.hdr.ctx_id)
        case let .transferFromHost3D(t):
            try r3.transferFromHost3D(t, context: t.hdr.ctx_id)
        case let .submit3D(s, commands):
            try r3.submit3D(context: s.hdr.ctx_id, commands: commands)
        default:
            throw .unspec("\(command.name) is not a 3D command")
        }
        return .okNoData
    }

    // MARK: cursor queue

    /// Handles one cursor-queue chain. Like QEMU (both its device and its vhost-user backend),
    /// nothing is written back: the chain is returned with length 0. Bad requests are logged and
    /// dropped.
    public func handleCursor(_ chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        var reader = ChainReader(chain: chain, memory: memory)
        let command: GPUCommand
        do {
            command = try GPUCommand.decode(&reader, maxBackingEntries: 0)
        } catch {
            guestErrors.report(command: 0, code: error.error.responseType, "cursor queue: \(error.detail)")
            return 0
        }
        switch command {
        case let .updateCursor(c): updateCursor(c)
        case let .moveCursor(c): moveCursor(c)
        default:
            guestErrors.report(command: command.type, code: GPUError.unspec.responseType, "cursor queue: \(command.name) ignored")
        }
        return 0
    }

    // MARK: reset

    /// Device reset or frontend disconnect: disables every head (telling the display), drops
    /// every resource and every UUID of this device.
    public func reset() {
        let display = self.display
        scanouts.withLock { t in
            for i in 0..<t.count where t[i].resource != nil { disableHead(i, &t, display: display) }
        }
        renderer.reset()
        uuids.unregisterAll(device: deviceID)
        lifecycle.deviceReset()
        reportedModes.withLock { $0 = nil }
    }
}

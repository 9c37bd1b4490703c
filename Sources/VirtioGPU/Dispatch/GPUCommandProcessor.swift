import CShims
import DisplayChannel
import HostBuffers
import Logging
import Synchronization
import VhostUser
import VirtioCore

/// One resource as `snapshot()` reports it (for the control socket and `vgpuctl`). Backing is
/// reported as a count and a byte total: guest addresses are never shown.
public struct ResourceInfo: Equatable, Sendable {
    public let id: ResourceID
    public let uuid: ResourceUUID?
    public let format: PixelFormat
    public let width: UInt32
    public let height: UInt32
    public let stride: Int
    public let hostBytes: Int
    public let backingEntryCount: Int
    public let backingBytes: UInt64
    /// What export hands out: kind, size, coherency (before ASSIGN_UUID: the host copy).
    public let hostBuffer: HostBufferInfo
    /// Scanouts showing this resource.
    public let scanouts: [UInt32]
    /// When RESOURCE_CREATE_2D made it: wall-clock seconds since the epoch (0 if unknown).
    public var createdAt: Double = 0
}

/// The virtio-gpu device logic (virtio 1.2 section 5.7), 2D: decodes each request from a
/// descriptor chain, checks it, runs it against the renderer, scanouts, cursor and UUID registry,
/// and writes the response. No sockets: the vhost-user glue calls `handleControl` from the
/// control-queue worker and `handleCursor` from the cursor-queue worker.
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
    private let cursorBuffer = CursorBuffer()

    let logger: Logger
    private let guestErrors: GuestErrorLog
    private let displayBox: Mutex<any DisplaySink>
    let scanouts: Mutex<ScanoutTable>   // internal: GPUCommandProcessor+Display.swift
    /// What the last GET_DISPLAY_INFO told the guest, when the display answered (used by GET_EDID).
    private let reportedModes = Mutex<[DisplayMode]?>(nil)
    private let cursorImage = Mutex(CursorBuffer())
    /// Lifecycle events (create, UUID assignment, unref) for the control socket; nil: none.
    public let events: ResourceEventHub?
    /// Told when a UUID is first assigned and when a resource holding one is unreferenced (the
    /// vhost-user shared-object publisher). Called on the control-queue worker; never per frame.
    private let uuidObserver = Mutex<(@Sendable (UUIDChange) -> Void)?>(nil)
    /// Set when the display did not answer a DMABUF_UPDATE: every head goes back to pixel
    /// updates for the rest of this device's life (logged once).
    let dmabufScanoutGivenUp = Atomic<Bool>(false)
    /// Creation times (wall clock) by resource: touched on create, unref, reset and snapshots only.
    private let createdAt = Mutex<[ResourceID: Double]>([:])

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
        self.events = events
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
    public enum UUIDChange: Equatable, Sendable {
        case assigned(ResourceID, ResourceUUID)
        case unreferenced(ResourceID, ResourceUUID)
    }

    /// Sets (nil: clears) the UUID observer. Reset drops UUIDs without telling it.
    public func setUUIDObserver(_ observer: (@Sendable (UUIDChange) -> Void)?) {
        uuidObserver.withLock { $0 = observer }
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
            let id = ResourceID(c.resource_id)
            guard renderer.geometry(of: id) != nil else { throw .invalidResourceID("\(id) does not exist") }
            let had = uuids.uuid(device: deviceID, resource: id)
            if had == nil, let info = renderer.exportResource(id, memory: memory) {
                // The host buffer is chosen before the UUID resolves, so no importer ever sees
                // the UUID without its buffer.
                if let why = info.shadowReason { logger.info("\(id) exported as \(info.kind.rawValue) (\(info.coherency.rawValue)): \(why)") }
            }
            let uuid = uuids.assign(device: deviceID, resource: id)
            if had == nil {
                events?.publish(ResourceEvent(kind: .uuidAssigned, device: deviceID, resource: id, uuid: uuid))
                uuidObserver.withLock { $0 }?(.assigned(id, uuid))
            }
            return .okResourceUUID(uuid)
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
            let now = wallClockSeconds()
            createdAt.withLock { $0[id] = now }
            events?.publish(ResourceEvent(kind: .created, device: deviceID, resource: id, time: now))
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

    // MARK: commands

    /// GET_DISPLAY_INFO: the display's view when it answers (QEMU's), else the configured default.
    private func displayModes() -> [DisplayMode] {
        let n = Int(numScanouts)
        if let reported = display.displayInfo() {
            var modes = Array(reported.prefix(n))
            while modes.count < n { modes.append(DisplayMode(rect: PixelRect(x: 0, y: 0, width: 0, height: 0), enabled: false)) }
            reportedModes.withLock { $0 = modes }
            return modes
        }
        reportedModes.withLock { $0 = nil }
        return (0..<n).map { i in
            i < Int(config.defaultEnabledScanouts)
                ? DisplayMode(rect: PixelRect(x: 0, y: 0, width: config.defaultWidth, height: config.defaultHeight), enabled: true)
                : DisplayMode(rect: PixelRect(x: 0, y: 0, width: 0, height: 0), enabled: false)
        }
    }

    /// GET_EDID (spec 5.7.6.8): the display's EDID if it has one, else a generated EDID 1.4 block
    /// whose preferred mode is the head's current mode.
    private func getEDID(scanout: UInt32) throws(GPUFailure) -> GPUResponse {
        guard scanout < numScanouts else { throw .invalidScanoutID("scanout \(scanout) ≥ \(numScanouts)") }
        if let blob = display.edid(scanout: scanout) {
            if let body = GPUResponse.edid(blob) { return .okEDID(body) }
            logger.warning("display EDID for scanout \(scanout) has \(blob.count) bytes (1...1024 allowed); generating one")
        }
        let mode = preferredMode(scanout: Int(scanout))
        let blob = EDIDGenerator.generate(width: mode.width, height: mode.height, serial: scanout + 1)
        guard let body = GPUResponse.edid(blob) else { throw .unspec("generated EDID does not fit") }
        return .okEDID(body)
    }

    /// The mode a head is in: what the display last reported for it, else what the guest set
    /// it to, else the configured default.
    private func preferredMode(scanout: Int) -> (width: UInt32, height: UInt32) {
        if let modes = reportedModes.withLock({ $0 }), scanout < modes.count {
            let m = modes[scanout]
            if m.enabled, m.rect.width > 0, m.rect.height > 0 { return (m.rect.width, m.rect.height) }
        }
        let current = scanouts.withLock { $0[scanout] }
        if current.resource != nil, !current.rect.isEmpty { return (current.rect.width, current.rect.height) }
        return (config.defaultWidth, config.defaultHeight)
    }

    /// RESOURCE_CREATE_2D. Checks in QEMU's order: id, existence, format, size; then the caps.
    private func createResource2D(_ c: virtio_gpu_resource_create_2d) throws(GPUFailure) {
        let id = ResourceID(c.resource_id)
        guard !id.isNone else { throw .invalidResourceID("resource id 0 is reserved") }
        guard renderer.geometry(of: id) == nil else { throw .invalidResourceID("\(id) already exists") }
        guard let format = PixelFormat(wire: c.format) else { throw .invalidParameter("unknown format \(c.format)") }
        guard c.width > 0, c.height > 0 else { throw .invalidParameter("size \(c.width)x\(c.height)") }
        try renderer.createResource2D(id, format: format, width: c.width, height: c.height)
        let now = wallClockSeconds()
        createdAt.withLock { $0[id] = now }
        events?.publish(ResourceEvent(kind: .created, device: deviceID, resource: id, time: now))
    }

    /// RESOURCE_UNREF: like QEMU, first disables every scanout showing the resource.
    private func unrefResource(_ id: ResourceID) throws(GPUFailure) {
        guard renderer.geometry(of: id) != nil else { throw .invalidResourceID("\(id) does not exist") }
        let display = self.display
        scanouts.withLock { t in
            for i in 0..<t.count where t[i].resource == id { disableHead(i, &t, display: display) }
        }
        try renderer.destroyResource(id)
        let uuid = uuids.unregister(device: deviceID, resource: id)
        createdAt.withLock { _ = $0.removeValue(forKey: id) }
        events?.publish(ResourceEvent(kind: .unreferenced, device: deviceID, resource: id, uuid: uuid))
        if let uuid { uuidObserver.withLock { $0 }?(.unreferenced(id, uuid)) }
    }

    /// SET_SCANOUT (spec 5.7.6.8): resource 0 disables the head; otherwise the rectangle must be
    /// non-empty and within the resource. The display gets the new size and a first full frame.
    private func setScanout(_ c: virtio_gpu_set_scanout, memory: GuestMemory) throws(GPUFailure) {
        let scanoutID = c.scanout_id
        guard scanoutID < numScanouts else { throw .invalidScanoutID("scanout \(scanoutID) ≥ \(numScanouts)") }
        let index = Int(scanoutID)
        let id = ResourceID(c.resource_id)
        let display = self.display
        if id.isNone {
            scanouts.withLock { t in
                guard t[index].resource != nil else { return }   // QEMU: nothing to do, no message
                disableHead(index, &t, display: display)
            }
            return
        }
        guard let g = renderer.geometry(of: id) else { throw .invalidResourceID("\(id) does not exist") }
        let rect = PixelRect(c.r)
        guard !rect.isEmpty, rect.lies(within: g.width, g.height) else {
            throw .invalidParameter("scanout rect \(rect) empty or outside \(id) (\(g.width)x\(g.height))")
        }
        let renderer = self.renderer
        // With dmabuf scanout, a head's resource gets its host buffer now (zero copy where the
        // backing allows), whether or not the guest ever exports it.
        if config.dmabufScanout, !dmabufScanoutGivenUp.load(ordering: .relaxed) { _ = renderer.exportResource(id, memory: memory) }
        try scanouts.withLock { (t: inout ScanoutTable) throws(GPUFailure) in
            let wasDMABUF = t[index].viaDMABUF
            if showViaDMABUF(index, resource: id, rect: rect, display: display) {
                t[index] = Scanout(resource: id, rect: rect, viaDMABUF: true)
                return
            }
            if wasDMABUF { _ = display.scanoutDMABuf(scanoutID, rect: t[index].rect, buffer: nil) }
            // Only the SCANOUT now: the guest driver flushes right after SET_SCANOUT, and that
            // flush sends the whole head (see `wholeFrameOwed`); sending the frame here too
            // moved every flip's pixels twice. Without a flush, `controlQueueIdle` sends it.
            t[index] = Scanout(resource: id, rect: rect, wholeFrameOwed: true)
            display.setScanout(scanoutID, width: rect.width, height: rect.height)
        }
    }

    /// RESOURCE_FLUSH: for each head showing the resource, the part of `rect` it shows goes to
    /// the display in that head's coordinates. Hot path: no allocation.
    private func flushResource(_ id: ResourceID, rect: PixelRect) throws(GPUFailure) {
        guard let g = renderer.geometry(of: id) else { throw .invalidResourceID("\(id) does not exist") }
        guard rect.lies(within: g.width, g.height) else {
            throw .invalidParameter("flush rect \(rect) outside \(id) (\(g.width)x\(g.height))")
        }
        guard !rect.isEmpty else { return }
        let display = self.display
        try scanouts.withLock { (t: inout ScanoutTable) throws(GPUFailure) in
            for i in 0..<t.count {
                let s = t[i]
                guard s.resource == id, let part = rect.intersection(s.rect) else { continue }
                let target = PixelRect(x: part.x - s.rect.x, y: part.y - s.rect.y, width: part.width, height: part.height)
                if s.viaDMABUF {
                    // A dmabuf update, or (given up) the head re-shown whole with pixels.
                    updateViaDMABUF(i, &t, rect: target, display: display)
                    continue
                }
                if s.wholeFrameOwed {
                    // First pixels since SET_SCANOUT: the whole head, whatever the rect.
                    t[i].wholeFrameOwed = false
                    try sendWholeFrame(i, &t, display: display)
                    continue
                }
                try sendPixels(i, &t, part: part, display: display)
            }
        }
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

    /// UPDATE_CURSOR: resource 0 hides the cursor; otherwise the 64×64 resource's pixels become
    /// the cursor image (ARGB) at (x, y) with its hot spot.
    private func updateCursor(_ c: virtio_gpu_update_cursor) {
        let type = VIRTIO_GPU_CMD_UPDATE_CURSOR.rawValue
        let scanout = c.pos.scanout_id
        guard scanout < numScanouts else {
            guestErrors.report(command: type, code: GPUError.invalidScanoutID.responseType, "UPDATE_CURSOR: scanout \(scanout) ≥ \(numScanouts)")
            return
        }
        let display = self.display
        let id = ResourceID(c.resource_id)
        if id.isNone {
            display.cursorHide(scanout: scanout)
            return
        }
        if let r3 = renderer3D {
            // Read back on the render thread; the cursor queue does not wait for it.
            let buffer = cursorBuffer, guestErrors = self.guestErrors
            let (x, y, hotX, hotY) = (c.pos.x, c.pos.y, c.hot_x, c.hot_y)
            r3.withCursorImageAsync(id, into: buffer) { result in
                switch result {
                case .success: display.cursorUpdate(scanout: scanout, x: x, y: y, hotX: hotX, hotY: hotY, pixels: buffer.pixels)
                case let .failure(error): guestErrors.report(command: type, code: error.error.responseType, "UPDATE_CURSOR: \(error)")
                }
            }
            return
        }
        let renderer = self.renderer
        do {
            try cursorImage.withLock { (image: inout CursorBuffer) throws(GPUFailure) in
                try renderer.copyCursorImage(id, into: image.pixels)
                display.cursorUpdate(scanout: scanout, x: c.pos.x, y: c.pos.y, hotX: c.hot_x, hotY: c.hot_y, pixels: image.pixels)
            }
        } catch {
            guestErrors.report(command: type, code: error.error.responseType, "UPDATE_CURSOR: \(error)")
        }
    }

    /// MOVE_CURSOR: moves the cursor; resource 0 hides it (as QEMU's vhost-user backend does).
    private func moveCursor(_ c: virtio_gpu_update_cursor) {
        let scanout = c.pos.scanout_id
        guard scanout < numScanouts else {
            guestErrors.report(command: VIRTIO_GPU_CMD_MOVE_CURSOR.rawValue, code: GPUError.invalidScanoutID.responseType,
                               "MOVE_CURSOR: scanout \(scanout) ≥ \(numScanouts)")
            return
        }
        if c.resource_id == 0 {
            display.cursorHide(scanout: scanout)
        } else {
            display.cursorMove(scanout: scanout, x: c.pos.x, y: c.pos.y)
        }
    }

    // MARK: lifecycle and inspection

    /// Device reset or frontend disconnect: disables every head (telling the display), drops
    /// every resource and every UUID of this device.
    public func reset() {
        let display = self.display
        scanouts.withLock { t in
            for i in 0..<t.count where t[i].resource != nil { disableHead(i, &t, display: display) }
        }
        renderer.reset()
        uuids.unregisterAll(device: deviceID)
        let hadResources = createdAt.withLock { t in
            defer { t.removeAll() }
            return !t.isEmpty
        }
        if hadResources { events?.publish(ResourceEvent(kind: .deviceReset, device: deviceID)) }
        reportedModes.withLock { $0 = nil }
    }

    /// Every resource with its UUID, geometry, host and backing sizes and the heads showing it.
    public func snapshot() -> [ResourceInfo] {
        let heads = scanouts.withLock { $0.scanouts }
        let created = createdAt.withLock { $0 }
        return renderer.resources().map { r in
            ResourceInfo(id: r.id, uuid: uuids.uuid(device: deviceID, resource: r.id), format: r.geometry.format,
                         width: r.geometry.width, height: r.geometry.height, stride: r.stride, hostBytes: r.hostBytes,
                         backingEntryCount: r.backingEntryCount, backingBytes: r.backingBytes, hostBuffer: r.hostBuffer,
                         scanouts: heads.indices.filter { heads[$0].resource == r.id }.map { UInt32($0) },
                         createdAt: created[r.id] ?? 0)
        }
    }

    /// One resource as `snapshot()` reports it, or nil.
    public func resourceInfo(_ id: ResourceID) -> ResourceInfo? {
        snapshot().first { $0.id == id }
    }

    /// The guest ranges attached to `id` (ATTACH_BACKING), in order: empty without backing, nil
    /// if no such resource. Guest DMA namespace: for inspection only (`vgpuctl show`), never an
    /// identity or a lookup key.
    public func backingEntries(of id: ResourceID) -> [BackingEntry]? {
        renderer.backingEntries(of: id)
    }

    /// What each head shows.
    public func scanoutStates() -> [Scanout] {
        scanouts.withLock { $0.scanouts }
    }

    /// The host copy of a resource, for tests and inspection.
    public func hostStorage(of id: ResourceID) -> HostPixelStorage? {
        renderer.hostStorage(of: id)
    }

    /// A new fd of the resource's host buffer for a consumer (vgpuctl export/dump,
    /// GET_SHARED_OBJECT), with what it is. The caller owns the fd.
    public func openHostBuffer(_ id: ResourceID) throws(GPUFailure) -> (fd: Int32, info: HostBufferInfo) {
        try renderer.openHostBuffer(id)
    }
}

extension PixelRect {
    init(_ r: virtio_gpu_rect) {
        self.init(x: r.x, y: r.y, width: r.width, height: r.height)
    }
}

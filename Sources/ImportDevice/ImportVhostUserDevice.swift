import CImportWire
import CShims
import Logging
import VGPUResolve
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// How the importer resolves and how much it holds.
public struct ImportDeviceOptions: Sendable {
    /// Exporters' control sockets, asked in this order.
    public var controlSockets: [String]
    /// Ask QEMU's shared-object table first (BACKEND_SHARED_OBJECT_LOOKUP).
    public var sharedObjectLookup: Bool
    /// Handles one driver may hold (IDENTIFY's max_handles), 1...65535.
    public var maxHandles: Int
    /// What the control socket's `list` shows as the holder.
    public var holder: String
    /// Seconds a control socket request may take.
    public var controlTimeout: Double

    public init(controlSockets: [String], sharedObjectLookup: Bool = true, maxHandles: Int = 64,
                holder: String = "vgpu-import-device", controlTimeout: Double = 2) {
        self.controlSockets = controlSockets
        self.sharedObjectLookup = sharedObjectLookup
        self.maxHandles = min(max(maxHandles, 1), 65535)
        self.holder = holder
        self.controlTimeout = controlTimeout
    }
}

/// The importer device (docs/importer-protocol.md), served over vhost-user on QEMU's
/// vhost-user-i2c-pci: one request queue; IDENTIFY, IMPORT(uuid), QUERY(handle), RELEASE(handle).
/// Buffers are named by UUID only and resolved (a) through QEMU's shared-object table on the
/// backend channel, then (b) through the exporters' control sockets (`resolve`).
///
/// The guest is not trusted: every request is checked before anything happens, and every
/// answer is a whole 128-byte response with a status (never a trap).
public final class ImportVhostUserDevice: VhostUserDevice {
    public static let name = "vgpu-import-device"

    public let queueCount = 1
    public let maxQueueSize: UInt16 = 1024
    /// No device features: QEMU's vhost-user-i2c passes only bit 0 (and RING_RESET) through.
    public let deviceFeatures: UInt64 = 0
    /// SHARED_OBJECT (the server adds BACKEND_REQ), so QEMU hands over the backend channel
    /// (SET_BACKEND_REQ_FD) that LOOKUP is sent on.
    public var protocolFeatures: VhostUserProtocolFeatures { [.sharedObject] }

    public let options: ImportDeviceOptions
    private let log: RateLimitedLogger<String>
    private let sources: [ControlSource]
    private let channel = Mutex<BackendRequestChannel?>(nil)
    private let table: Mutex<HandleTable>

    /// Probes each control socket once (one warning line for each that is missing or refuses;
    /// imports then answer as documented) and starts their watches.
    public init(options: ImportDeviceOptions, logger: Logger) throws {
        self.options = options
        self.log = RateLimitedLogger(logger: logger, perSecond: 5)
        self.table = Mutex(HandleTable(capacity: options.maxHandles))
        var sources: [ControlSource] = []
        for (i, path) in options.controlSockets.enumerated() {
            sources.append(try ControlSource(path: path, index: i, timeout: options.controlTimeout, log: log))
        }
        self.sources = sources
        for s in sources {
            s.probe()
            let index = s.index
            s.startWatching(event: { [weak self] e in self?.revoke(source: index, event: e) },
                            lost: { [weak self] in self?.revokeAll(source: index, why: "watch connection lost") })
        }
    }

    /// Stops the watches; releases every handle.
    public func shutdown() {
        releaseAll()
        for s in sources { s.stop() }
    }

    deinit { for s in sources { s.stop() } }

    // MARK: vhost-user hooks

    public func backendChannelChanged(_ channel: BackendRequestChannel?) {
        self.channel.withLock { $0 = channel }
    }

    /// A LOOKUP in progress on the worker must not hold up GET_VRING_BASE.
    public func willStopQueues() { channel.withLock { $0 }?.interrupt() }

    public func reset() { releaseAll() }
    public func disconnected() { releaseAll() }

    // MARK: requests

    public func handleChain(queue: Int, chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        let started = monotonicNanoseconds()
        var writer = ChainWriter(chain: chain, memory: memory)
        // No room for a whole response: nothing can be answered (the driver sees used length 0).
        guard chain.writableBytes >= VGPU_IMPORT_WIRE_RESP_SIZE else {
            log.log(key: "short-response", "request dropped: response buffer of \(chain.writableBytes) bytes, needs \(VGPU_IMPORT_WIRE_RESP_SIZE)")
            return 0
        }
        var request = vgpu_import_wire_req()
        var reader = ChainReader(chain: chain, memory: memory)
        let readable = min(chain.readableBytes, Int(VGPU_IMPORT_WIRE_REQ_SIZE))
        var readFailed = false
        withUnsafeMutableBytes(of: &request) { raw in
            do throws(ChainError) { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<readable])) } catch { readFailed = true }
        }
        var response = vgpu_import_wire_resp()
        response.magic = VGPU_IMPORT_WIRE_MAGIC.littleEndian
        response.version = UInt16(VGPU_IMPORT_WIRE_VERSION).littleEndian
        response.tag = request.tag   // echoed as is (both little-endian)
        let status = readFailed ? Status.invalid : dispatch(request, readable: chain.readableBytes, writable: chain.writableBytes, into: &response)
        response.status = status.rawValue.littleEndian
        response.device_ns = (monotonicNanoseconds() &- started).littleEndian
        do { try writer.writeObject(response) } catch {
            log.log(key: "write", "response not written: \(error)")
            return 0
        }
        return UInt32(VGPU_IMPORT_WIRE_RESP_SIZE)
    }

    enum Status: UInt16 {
        case ok = 0, notFound = 1, revoked = 2, unsupported = 3, error = 4, invalid = 5, noHandles = 6
    }

    private func dispatch(_ r: vgpu_import_wire_req, readable: Int, writable: Int, into response: inout vgpu_import_wire_resp) -> Status {
        // Spec checks first (docs/importer-protocol.md): exact sizes, magic, version, flags.
        guard readable == VGPU_IMPORT_WIRE_REQ_SIZE, writable == VGPU_IMPORT_WIRE_RESP_SIZE else {
            log.log(key: "size", "invalid request: \(readable) readable bytes (needs \(VGPU_IMPORT_WIRE_REQ_SIZE)), \(writable) writable (needs \(VGPU_IMPORT_WIRE_RESP_SIZE))")
            return .invalid
        }
        guard UInt32(littleEndian: r.magic) == VGPU_IMPORT_WIRE_MAGIC, UInt16(littleEndian: r.version) == VGPU_IMPORT_WIRE_VERSION else {
            log.log(key: "magic", "invalid request: magic 0x\(String(UInt32(littleEndian: r.magic), radix: 16)), version \(UInt16(littleEndian: r.version))")
            return .invalid
        }
        guard r.flags == 0 else {
            log.log(key: "flags", "invalid request: flags 0x\(String(UInt32(littleEndian: r.flags), radix: 16))")
            return .invalid
        }
        let handle = UInt32(littleEndian: r.handle)
        switch Int32(UInt16(littleEndian: r.type)) {
        case VGPU_IMPORT_REQ_IDENTIFY:
            response.max_handles = UInt32(options.maxHandles).littleEndian
            response.features = 0
            withUnsafeMutableBytes(of: &response.name) { name in
                for (i, b) in Self.name.utf8.prefix(name.count - 1).enumerated() { name[i] = b }
            }
            return .ok
        case VGPU_IMPORT_REQ_IMPORT:
            let uuid = withUnsafeBytes(of: r.uuid) { ResourceUUID(pointer: $0.baseAddress!) }
            return importBuffer(uuid, into: &response)
        case VGPU_IMPORT_REQ_QUERY:
            response.handle = handle.littleEndian
            return query(handle, into: &response)
        case VGPU_IMPORT_REQ_RELEASE:
            response.handle = handle.littleEndian
            return release(handle)
        default:
            log.log(key: "type", "invalid request: type \(UInt16(littleEndian: r.type))")
            return .invalid
        }
    }

    // MARK: IMPORT

    private func importBuffer(_ uuid: ResourceUUID, into response: inout vgpu_import_wire_resp) -> Status {
        guard table.withLock({ $0.hasFreeSlot }) else {
            log.log(key: "handles", "IMPORT \(uuid): all \(options.maxHandles) handles in use")
            return .noHandles
        }
        // (a) QEMU's shared-object table.
        var soStatus = VGPU_IMPORT_SO_NOT_TRIED
        var soFD: OwnedFileDescriptor?
        if options.sharedObjectLookup, let channel = channel.withLock({ $0 }) {
            switch channel.lookup(uuid: uuid.bytes) {
            case let .found(fd):
                soStatus = 0
                soFD = fd
            case let .notFound(status):
                // QEMU's u64 is a negative errno (QEMU 10.0.2: -22): keep it signed.
                soStatus = status == 0 ? VGPU_IMPORT_SO_NO_FD : Int32(truncatingIfNeeded: Int64(bitPattern: status))
            case .noAnswer:
                soStatus = VGPU_IMPORT_SO_NO_ANSWER
            }
        }
        response.shared_object_status = UInt32(bitPattern: soStatus).littleEndian

        // (b) the control sockets, in order: `resolve` (fd, layout and a hold), or with an fd
        // from (a) only `show` (the layout).
        var resolved: (fd: OwnedFileDescriptor, layout: ResolvedLayout, source: Int, held: Bool)?
        var notFoundAnswers = 0
        for s in sources {
            do throws(ResolveError) {
                if let soFD {
                    if let layout = try s.withClient({ c throws(ResolveError) in try c.show(uuid: uuid) }) {
                        resolved = (soFD, layout, s.index, false)
                        break
                    }
                    notFoundAnswers += 1
                } else {
                    let b = try s.withClient { c throws(ResolveError) in try c.resolve(uuid: uuid, holder: options.holder) }
                    resolved = (b.fd, b.layout, s.index, true)
                    break
                }
            } catch {
                if case .notFound = error { notFoundAnswers += 1 }
                else if !error.isConnectionFailure { log.log(key: "control-\(s.index)", "IMPORT \(uuid): \(error)") }   // else: logged by the source
            }
        }
        if resolved == nil, let soFD {
            // Known only to QEMU's table: the fd alone says the size; no format or geometry.
            let size = BufferMapping.fileSize(soFD.rawValue)
            let layout = ResolvedLayout(uuid: uuid, device: 0, resource: 0, fourcc: 0, width: 0, height: 0, stride: 0, offset: 0,
                                        size: size, kind: "", coherency: "", handleType: "", modifier: 0)
            resolved = (soFD, layout, -1, false)
        }
        guard let resolved else {
            if notFoundAnswers > 0 { return .notFound }
            // Nobody could be asked (every control socket missing or refusing): a device failure.
            log.log(key: "unresolved", "IMPORT \(uuid): no control socket answered\(sources.isEmpty ? " (none given)" : "")")
            return sources.isEmpty && soStatus != VGPU_IMPORT_SO_NO_ANSWER ? .notFound : .error
        }
        let path = soFD != nil ? VGPU_IMPORT_PATH_SHARED_OBJECT : VGPU_IMPORT_PATH_CONTROL
        let fail = { (status: Status, why: String) -> Status in
            self.log.log(key: "import-\(status)", "IMPORT \(uuid): \(why)")
            if resolved.held { self.releaseHold(uuid, source: resolved.source) }
            return status
        }
        guard let geometry = DigestGeometry(resolved.layout) else {
            return fail(.unsupported, "fourcc 0x\(String(resolved.layout.fourcc, radix: 16)) has no known pixel size")
        }
        let mapping: BufferMapping
        do { mapping = try BufferMapping(fd: resolved.fd, size: resolved.layout.size) } catch {
            return fail(.unsupported, "cannot map: \(error)")
        }
        guard let digest = mapping.digest(geometry) else {
            return fail(.error, "layout does not fit in the \(mapping.length)-byte buffer: offset \(geometry.offset), stride \(geometry.stride), \(geometry.rows) rows of \(geometry.rowBytes) bytes")
        }
        let slot = Slot(uuid: uuid, source: resolved.source, held: resolved.held, path: UInt32(path), soStatus: soStatus,
                        layout: resolved.layout, geometry: geometry, mapping: mapping)
        guard let handle = table.withLock({ $0.insert(slot) }) else {
            return fail(.noHandles, "all \(options.maxHandles) handles in use")
        }
        response.handle = handle.littleEndian
        fill(&response, slot, digest: digest)
        return .ok
    }

    // MARK: QUERY

    private func query(_ handle: UInt32, into response: inout vgpu_import_wire_resp) -> Status {
        guard let slot = table.withLock({ $0.slot(handle) }) else {
            log.log(key: "handle", "QUERY: unknown handle \(handle)")
            return .invalid
        }
        response.shared_object_status = UInt32(bitPattern: slot.soStatus).littleEndian
        response.path = slot.path.littleEndian
        guard slot.mapping != nil else { return .revoked }
        // Never a stale buffer: the UUID must still name the same resource now.
        switch stillAlive(slot) {
        case .alive: break
        case .gone:
            table.withLock { $0.revoke(handle) }
            return .revoked
        case .unknown: return .error
        }
        // Digest under the table lock: a revocation (watch thread) cannot unmap meanwhile.
        let digest = table.withLock { t -> UInt64?? in
            guard let current = t.slot(handle) else { return .some(nil) }
            guard let mapping = current.mapping else { return nil }
            return .some(mapping.digest(current.geometry))
        }
        switch digest {
        case .none: return .revoked
        case .some(.none): return .invalid   // released meanwhile (not by this queue: reset)
        case let .some(.some(d)):
            fill(&response, slot, digest: d)
            return .ok
        }
    }

    private enum Liveness { case alive, gone, unknown }

    private func stillAlive(_ slot: Slot) -> Liveness {
        if slot.source >= 0 {
            do throws(ResolveError) {
                let now = try sources[slot.source].withClient { c throws(ResolveError) in try c.show(uuid: slot.uuid) }
                guard let now, now.device == slot.layout.device, now.resource == slot.layout.resource else { return .gone }
                return .alive
            } catch {
                switch error {
                case .noSocket, .refused: return .gone   // the exporter is gone, and its resources with it
                default:
                    log.log(key: "query-\(slot.source)", "QUERY \(slot.uuid): \(error)")
                    return .unknown
                }
            }
        }
        // Known only to QEMU's table: it must still answer the LOOKUP.
        guard let channel = channel.withLock({ $0 }) else { return .gone }
        switch channel.lookup(uuid: slot.uuid.bytes) {
        case .found: return .alive
        case .notFound: return .gone
        case .noAnswer: return .unknown
        }
    }

    // MARK: RELEASE, revocation

    private func release(_ handle: UInt32) -> Status {
        guard let slot = table.withLock({ $0.remove(handle) }) else {
            log.log(key: "handle", "RELEASE: unknown handle \(handle)")
            return .invalid
        }
        if slot.held { releaseHold(slot.uuid, source: slot.source) }
        return .ok
    }

    private func releaseHold(_ uuid: ResourceUUID, source: Int) {
        guard source >= 0 else { return }
        do throws(ResolveError) { _ = try sources[source].withClient { c throws(ResolveError) in try c.release(uuid: uuid) } } catch {
            log.log(key: "release", "release \(uuid) on \(sources[source].path): \(error)")
        }
    }

    /// Reset and disconnect: every handle goes (holds released on their sockets).
    private func releaseAll() {
        let slots = table.withLock { $0.removeAll() }
        for s in slots where s.held { releaseHold(s.uuid, source: s.source) }
    }

    /// A watch event: unref of a UUID, or a device reset/disconnect, revokes the handles it
    /// concerns (unmapped and closed now; the next QUERY answers REVOKED).
    func revoke(source: Int, event: ResolveEvent) {
        let n: Int
        switch event.kind {
        case "unref":
            n = table.withLock { $0.revokeAll { $0.source == source && ($0.uuid == event.uuid || ($0.layout.device == event.device && $0.layout.resource == event.resource)) } }
        case "device-reset", "device-disconnected":
            n = table.withLock { $0.revokeAll { $0.source == source && $0.layout.device == event.device } }
        case "dropped":
            n = table.withLock { $0.revokeAll { $0.source == source } }
        default:
            n = event.dropped > 0 ? table.withLock { $0.revokeAll { $0.source == source } } : 0
        }
        if n > 0 { log.logger.info("\(event.kind) on device \(event.device): \(n) handle\(n == 1 ? "" : "s") revoked") }
    }

    func revokeAll(source: Int, why: String) {
        let n = table.withLock { $0.revokeAll { $0.source == source } }
        if n > 0 { log.logger.info("\(sources[source].path): \(why): \(n) handle\(n == 1 ? "" : "s") revoked") }
    }

    /// Handles in use (tests, logs).
    public var handleCount: Int { table.withLock { $0.inUse } }
    /// Handles still mapped (not revoked).
    public var mappedCount: Int { table.withLock { $0.mapped } }

    private func fill(_ r: inout vgpu_import_wire_resp, _ s: Slot, digest: UInt64) {
        let l = s.layout
        r.device = l.device.littleEndian
        r.resource_id = l.resource.littleEndian
        r.fourcc = l.fourcc.littleEndian
        r.width = l.width.littleEndian
        r.height = l.height.littleEndian
        r.stride = UInt32(clamping: l.stride).littleEndian
        r.offset = UInt32(clamping: l.offset).littleEndian
        r.size = UInt64(l.size).littleEndian
        r.digest = digest.littleEndian
        r.host_kind = UInt32(Self.kind(l.kind)).littleEndian
        r.coherency = UInt32(Self.coherency(l.coherency)).littleEndian
        r.path = s.path.littleEndian
        r.shared_object_status = UInt32(bitPattern: s.soStatus).littleEndian
    }

    static func kind(_ k: String) -> Int32 {
        switch k {
        case "udmabuf": VGPU_IMPORT_KIND_UDMABUF
        case "dma-heap": VGPU_IMPORT_KIND_DMA_HEAP
        case "drm-dumb": VGPU_IMPORT_KIND_DRM_DUMB
        case "memfd": VGPU_IMPORT_KIND_MEMFD
        case "gl-texture": VGPU_IMPORT_KIND_GL_TEXTURE
        default: VGPU_IMPORT_KIND_UNKNOWN
        }
    }

    static func coherency(_ c: String) -> Int32 {
        switch c {
        case "zero-copy": VGPU_IMPORT_COHERENCY_ZERO_COPY
        case "on-transfer": VGPU_IMPORT_COHERENCY_ON_TRANSFER
        case "on-flush": VGPU_IMPORT_COHERENCY_ON_FLUSH
        default: VGPU_IMPORT_COHERENCY_UNKNOWN
        }
    }
}

/// Nanoseconds on the monotonic clock.
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

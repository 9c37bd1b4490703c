import ControlProtocol
import VirtioCore
import Foundation
import Logging
import Synchronization
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The backend's control socket: one thread, poll(2) over the listener and every client. Reads
/// the device directory and the processors' inspection APIs only, so device workers are never
/// blocked by it (the snapshots take each table lock briefly).
///
/// Access: the socket file is mode 0600, and every peer's SO_PEERCRED is checked (same uid as
/// the backend, or root, by default); a refused peer gets a `permission-denied` error line and
/// is disconnected, and the refusal is logged.
///
/// Bad input: garbage or wrong-version lines get an error reply and the connection stays; a line
/// over `ControlProtocol.maxLineBytes` gets `request-too-large` and the connection is closed; a
/// client that stalls mid-line for `partialLineTimeout` or does not read its replies for
/// `sendTimeout` is dropped. Other clients and the devices are not disturbed.
public final class ControlServer: Sendable {
    public let path: String
    private let directory: DeviceDirectory
    private let logger: Logger
    private let peerLog: RateLimitedLogger<String>
    private let authorize: @Sendable (PeerCredentials) -> Bool
    private let listener: OwnedFileDescriptor
    private let stopFD: OwnedFileDescriptor
    private let exited = DispatchSemaphore(value: 0)
    private let running = Atomic<Bool>(false)
    private let holds = HoldTable()
    private let nextClient = Atomic<Int>(0)

    public static let maxClients = 64
    public static let sendTimeout = 2
    /// Seconds a client may stay in the middle of a request line.
    public let partialLineTimeout: Double

    /// Binds `path` (mode 0600). With `createDirectory`, makes the parent directory (0700) first.
    public init(path: String, directory: DeviceDirectory, logger: Logger, createDirectory: Bool = false, partialLineTimeout: Double = 10,
                authorize: @escaping @Sendable (PeerCredentials) -> Bool = { $0.isAllowed(serverUID: getuid()) }) throws {
        self.partialLineTimeout = partialLineTimeout
        if createDirectory {
            let parent = (path as NSString).deletingLastPathComponent
            if !parent.isEmpty { try? FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]) }
        }
        self.path = path
        self.directory = directory
        self.logger = logger
        self.peerLog = RateLimitedLogger(logger: logger, perSecond: 5)
        self.authorize = authorize
        // listen(2) comes after chmod inside UnixSocket.listen: no connection before mode 0600.
        self.listener = try UnixSocket.listen(path: path, backlog: 16, mode: 0o600)
        self.stopFD = try EventFD.make()
    }

    /// Starts the control thread.
    public func start() {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        startThread(name: "vgpu-control") { [self] in
            serve()
            exited.signal()
        }
    }

    /// Stops the thread, closes every client and removes the socket file.
    public func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        EventFD.signal(stopFD.rawValue)
        exited.wait()
    }

    private final class Client {
        let socket: OwnedFileDescriptor
        let credentials: PeerCredentials
        var buffer: [UInt8] = []
        var partialSince: Double?
        var subscription: ResourceEventSubscription?
        var watchID = 0
        var closed = false
        /// Names this connection in the hold table.
        let key: Int
        init(socket: OwnedFileDescriptor, credentials: PeerCredentials, key: Int) {
            self.socket = socket; self.credentials = credentials; self.key = key
        }
    }

    private func serve() {
        var clients: [Client] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        // The server's own subscription: holds end with their resource or device. Without one
        // (no eventfd) holds still never outlive their UUID in `list` (keyed by UUID).
        let lifecycle = try? directory.events.subscribe(capacity: 4096)
        defer {
            for c in clients { c.subscription?.cancel() }
            lifecycle?.cancel()
            unlink(path)
        }
        var acceptPausedUntil = 0.0
        while true {
            if let lifecycle { for e in lifecycle.take().events { holds.drop(e) } }
            // While accept(2) fails for want of fds the listener stays readable: it is left out
            // of the poll until the back-off ends, or the loop would spin (issue 11 §4).
            let listening = monotonicSeconds() >= acceptPausedUntil
            var fds = [pollfd(fd: stopFD.rawValue, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: listening ? listener.rawValue : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: lifecycle?.wakeFD.rawValue ?? -1, events: Int16(POLLIN), revents: 0)]
            for c in clients {
                fds.append(pollfd(fd: c.socket.rawValue, events: Int16(POLLIN), revents: 0))
                fds.append(pollfd(fd: c.subscription?.wakeFD.rawValue ?? -1, events: Int16(POLLIN), revents: 0))
            }
            let n = poll(&fds, nfds_t(fds.count), Int32(min(1000, max(50, partialLineTimeout * 500))))
            if n < 0 && errno != EINTR {
                logger.error("control socket: poll failed: errno \(errno)")
                return
            }
            if fds[0].revents != 0 {
                // Stopping: watchers still get what happened up to now (the last device leaving).
                for c in clients where !c.closed { deliverEvents(c) }
                return
            }
            let polled = clients.count   // clients accepted below are polled from the next round
            if fds[1].revents & Int16(POLLIN) != 0, !acceptClient(&clients) { acceptPausedUntil = monotonicSeconds() + 0.1 }
            let now = monotonicSeconds()
            for (i, c) in clients.prefix(polled).enumerated() where !c.closed {
                let socketEvents = fds[3 + 2 * i].revents
                if socketEvents != 0 { readFrom(c, &chunk) }
                if !c.closed, fds[4 + 2 * i].revents != 0 { deliverEvents(c) }
                if !c.closed, let since = c.partialSince, now - since > partialLineTimeout {
                    peerLog.log(.info, key: "stall", "control socket: client \(c.credentials) stalled mid-request; disconnected")
                    close(c)
                }
            }
            clients.removeAll { $0.closed }
        }
    }

    /// Sends one error line to a peer that is not served, then drops it. Reads what it already
    /// sent first, so closing does not reset the connection before the peer reads the reason.
    private func turnAway(_ socket: OwnedFileDescriptor, _ error: ControlError) {
        var scratch = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<16 {
            let n = scratch.withUnsafeMutableBytes { recv(socket.rawValue, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { break }
        }
        try? UnixSocket.send(socket.rawValue, [ControlCodec.encodeLine(ControlResponse.failure(nil, error))])
        _ = shutdown(socket.rawValue, Int32(SHUT_WR))
    }

    /// Accepts one client; false when accept(2) failed for want of fds or memory (the caller
    /// pauses accepting for a moment).
    @discardableResult
    private func acceptClient(_ clients: inout [Client]) -> Bool {
        let socket: OwnedFileDescriptor
        do { socket = try UnixSocket.accept(listener) } catch {
            guard error == .tooManyOpenFiles || error == .tooManyOpenFilesInSystem || error == .noMemory || error == .noBufferSpace
            else { return true }
            peerLog.log(key: "accept", "control socket: accept failed (\(error)); new clients wait until fds are free")
            return false
        }
        var tv = timeval(tv_sec: Self.sendTimeout, tv_usec: 0)
        _ = setsockopt(socket.rawValue, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard let credentials = PeerCredentials.of(socket: socket.rawValue) else {
            peerLog.log(key: "cred", "control socket: cannot read the peer's credentials (SO_PEERCRED); refused")
            turnAway(socket, ControlError(.permissionDenied, "peer credentials unavailable"))
            return true
        }
        guard authorize(credentials) else {
            peerLog.log(key: "refused", "control socket: refused peer \(credentials) (allowed: uid \(getuid()) or root)")
            turnAway(socket, ControlError(.permissionDenied,
                                          "permission denied: uid \(credentials.uid) may not use this control socket (only uid \(getuid()) or root)"))
            return true
        }
        guard clients.count < Self.maxClients else {
            peerLog.log(key: "busy", "control socket: \(Self.maxClients) clients connected; refused \(credentials)")
            turnAway(socket, ControlError(.busy, "too many control clients (\(Self.maxClients))"))
            return true
        }
        logger.debug("control socket: client \(credentials) connected")
        clients.append(Client(socket: socket, credentials: credentials, key: nextClient.add(1, ordering: .relaxed).newValue))
        return true
    }

    private func close(_ c: Client) {
        c.closed = true
        holds.dropClient(c.key)
        c.subscription?.cancel()
        c.subscription = nil
    }

    private func send(_ c: Client, _ response: ControlResponse, fd: Int32? = nil) {
        do { try UnixSocket.send(c.socket.rawValue, [ControlCodec.encodeLine(response)], fds: fd.map { [$0] } ?? []) } catch {
            peerLog.log(.info, key: "send", "control socket: client \(c.credentials) not reading (\(error)); disconnected")
            close(c)
        }
    }

    private func readFrom(_ c: Client, _ chunk: inout [UInt8]) {
        let n = chunk.withUnsafeMutableBytes { recv(c.socket.rawValue, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            close(c)
            return
        }
        if n == 0 {
            if !c.buffer.isEmpty { logger.debug("control socket: client \(c.credentials) left mid-request") }
            close(c)
            return
        }
        c.buffer.append(contentsOf: chunk[0..<n])
        while !c.closed, let nl = c.buffer.firstIndex(of: UInt8(ascii: "\n")) {
            let line = c.buffer[c.buffer.startIndex..<nl]
            if line.count > ControlProtocol.maxLineBytes { break }
            let lineCopy = Array(line)
            c.buffer.removeSubrange(c.buffer.startIndex...nl)
            if lineCopy.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            handleLine(lineCopy, c)
        }
        if c.closed { return }
        let pending = c.buffer.firstIndex(of: UInt8(ascii: "\n")) ?? c.buffer.endIndex
        if pending - c.buffer.startIndex > ControlProtocol.maxLineBytes {
            peerLog.log(.info, key: "oversize", "control socket: client \(c.credentials) sent a request over \(ControlProtocol.maxLineBytes) bytes; disconnected")
            send(c, .failure(nil, ControlError(.requestTooLarge, "request line longer than \(ControlProtocol.maxLineBytes) bytes")))
            close(c)
            return
        }
        c.partialSince = c.buffer.isEmpty ? nil : (c.partialSince ?? monotonicSeconds())
    }

    private func handleLine(_ line: [UInt8], _ c: Client) {
        switch ControlCodec.decodeRequest(line) {
        case let .rejected(response):
            send(c, response)
        case let .request(request, method):
            let reply = ControlHandler(directory: directory, holds: holds).handle(request, method)
            switch reply {
            case let .response(r): send(c, r)
            case let .withFD(r, fd): send(c, r, fd: fd.rawValue)   // fd closed when `fd` is dropped
            case let .resolved(r, fd, target):
                // Recorded before the reply goes out, so the holder sees itself in a `list` it sends next.
                holds.add(client: c.key, target: target, holder: request.holder ?? "", pid: c.credentials.pid)
                send(c, r, fd: fd.rawValue)
            case .release:
                // Validated by the handler: a UUID.
                let n = request.resource.flatMap(ResourceUUID.init(string:)).map { holds.release(client: c.key, uuid: $0) } ?? 0
                send(c, .success(request.id, ControlResult(released: n)))
            case .watch:
                c.subscription?.cancel()
                do {
                    c.subscription = try directory.events.subscribe(capacity: 1024)
                    c.watchID = request.id
                    send(c, .success(request.id, ControlResult(watching: true)))
                } catch {
                    send(c, .failure(request.id, ControlError(.internalError, "cannot subscribe: \(error)")))
                }
            }
        }
    }

    private func deliverEvents(_ c: Client) {
        guard let sub = c.subscription else { return }
        let (events, dropped) = sub.take()
        for (i, e) in events.enumerated() where !c.closed {
            send(c, .eventLine(c.watchID, EventRecord(e, dropped: i == 0 && dropped > 0 ? dropped : nil)))
        }
        if events.isEmpty, dropped > 0, !c.closed {
            send(c, .eventLine(c.watchID, EventRecord(kind: "dropped", device: 0, resource: nil, uuid: nil, time: wallClockSeconds(), dropped: dropped)))
        }
    }
}

extension EventRecord {
    init(_ e: ResourceEvent, dropped: Int?) {
        self.init(kind: e.kind.rawValue, device: e.device.raw, resource: e.resource?.raw, uuid: e.uuid?.description, time: e.time, dropped: dropped)
    }
}


/// What a request turns into: a reply line, a reply line with an fd, or a subscription.
enum ControlReply {
    case response(ControlResponse)
    case withFD(ControlResponse, OwnedFileDescriptor)
    /// `resolve`: the reply and fd, and the hold the server records for the connection.
    case resolved(ControlResponse, OwnedFileDescriptor, HoldTable.Target)
    /// `release`: the server drops the connection's holds.
    case release
    case watch
}

/// Who holds which resource (`resolve`), per control connection. Keyed by UUID, which is never
/// reused, so a hold can never show on a later resource with the same id; holds are dropped on
/// `release`, when the connection closes, and when the resource or its device goes away.
final class HoldTable: Sendable {
    struct Target: Sendable, Hashable {
        let uuid: ResourceUUID
        let device: GPUDeviceID
        let resource: ResourceID
    }
    struct Hold: Sendable {
        let client: Int
        let target: Target
        let holder: String
        let pid: Int32
        var count: Int
    }
    private let holds = Mutex<[Hold]>([])

    func add(client: Int, target: Target, holder: String, pid: Int32) {
        holds.withLock { h in
            if let i = h.firstIndex(where: { $0.client == client && $0.target == target && $0.holder == holder }) { h[i].count += 1 }
            else { h.append(Hold(client: client, target: target, holder: holder, pid: pid, count: 1)) }
        }
    }

    /// Undoes one resolve of `uuid` by `client`: 1, or 0 when it held none (released already,
    /// or the resource went away and its holds with it).
    func release(client: Int, uuid: ResourceUUID) -> Int {
        holds.withLock { h in
            guard let i = h.firstIndex(where: { $0.client == client && $0.target.uuid == uuid }) else { return 0 }
            h[i].count -= 1
            if h[i].count == 0 { h.remove(at: i) }
            return 1
        }
    }

    func dropClient(_ client: Int) { holds.withLock { $0.removeAll { $0.client == client } } }

    /// An unref, device reset or disconnect: the holds of what went away.
    func drop(_ event: ResourceEvent) {
        holds.withLock { h in
            switch event.kind {
            case .unreferenced:
                h.removeAll { $0.target.device == event.device && ($0.target.resource == event.resource || $0.target.uuid == event.uuid) }
            case .deviceReset, .deviceDisconnected:
                h.removeAll { $0.target.device == event.device }
            default: break
            }
        }
    }

    /// The holders of the resource that has `uuid` now.
    func holders(of uuid: ResourceUUID?, device: GPUDeviceID) -> [ResourceHolder] {
        guard let uuid else { return [] }
        return holds.withLock { h in
            h.filter { $0.target.uuid == uuid && $0.target.device == device }.map { ResourceHolder(holder: $0.holder, pid: $0.pid, count: $0.count) }
        }
    }
}

/// Answers requests from the device directory. Pure apart from opening export fds.
struct ControlHandler {
    let directory: DeviceDirectory
    var holds: HoldTable? = nil

    func handle(_ request: ControlRequest, _ method: ControlMethod) -> ControlReply {
        do {
            switch method {
            case .list:
                let now = wallClockSeconds()
                let devices = directory.devices().map { d in
                    DeviceSummary(id: d.id.raw, label: d.label, connectedSeconds: max(0, now - d.connectedAt),
                                  resources: d.processor.snapshot().map { summary($0, device: d.id, now: now) })
                }
                return .response(.success(request.id, ControlResult(devices: devices)))
            case .show:
                let (entry, info) = try resolve(request.resource)
                let ranges = (entry.processor.backingEntries(of: info.id) ?? []).map {
                    GuestRange(guestPhysicalAddress: "0x" + String($0.address.raw, radix: 16), length: $0.length)
                }
                let detail = ResourceDetail(resource: summary(info, device: entry.id, now: wallClockSeconds()), deviceLabel: entry.label,
                                            createdAt: info.createdAt, guestBacking: ranges)
                return .response(.success(request.id, ControlResult(detail: detail)))
            case .export, .dump, .resolve:
                if method != .dump, let r = request.resource, ResourceUUID(string: r) == nil {
                    throw ControlError(.badRequest, "\(method.rawValue) takes a UUID (resources are exported by UUID only); got \"\(r)\"")
                }
                if method == .resolve, (request.holder ?? "").isEmpty || (request.holder ?? "").utf8.count > 256 {
                    throw ControlError(.badRequest, "resolve needs \"holder\": who holds the buffer (1-256 bytes of text)")
                }
                let resolved: (DeviceDirectory.Entry, ResourceInfo)
                do { resolved = try resolve(request.resource) } catch {
                    // Not ours: a device whose frontend may be asked (SHARED_OBJECT_LOOKUP) can resolve it.
                    // Not for `resolve`: a hold is only recorded on this backend's own resources.
                    if method == .export, error.code == .notFound, let r = request.resource, let uuid = ResourceUUID(string: r),
                       let reply = exportForeign(uuid, request: request) {
                        return reply
                    }
                    throw error
                }
                let (entry, info) = resolved
                let opened: (fd: Int32, info: VirtioGPU.HostBufferInfo)
                do { opened = try entry.processor.openHostBuffer(info.id) } catch {
                    if error.error == .invalidResourceID {
                        throw ControlError(.notFound, "\(entry.id)/\(info.id) has no host buffer (unreferenced meanwhile?)")
                    }
                    throw ControlError(.internalError, "\(error)")
                }
                let fd = OwnedFileDescriptor(opened.fd)
                var layout = BufferLayout(uuid: info.uuid?.description, device: entry.id.raw, resource: info.id.raw,
                                          handleType: opened.info.handleType,
                                          format: info.format.description, fourcc: info.format.drmFourCCName,
                                          drmFormat: info.format.drmFourCC,
                                          width: info.width, height: info.height, stride: info.stride, offset: 0,
                                          size: opened.info.size, modifier: DRMFourCC.linearModifier)
                layout.kind = opened.info.kind.rawValue
                layout.coherency = opened.info.coherency.rawValue
                if let own = opened.info.layout {
                    // A GL texture: its own stride, offset, fourcc and modifier.
                    layout.stride = Int(own.stride)
                    layout.offset = Int(own.offset)
                    layout.drmFormat = own.fourcc
                    layout.fourcc = DRMFourCC.name(code: own.fourcc)
                    layout.modifier = own.modifier
                }
                if method == .resolve, let uuid = info.uuid {
                    return .resolved(.success(request.id, ControlResult(buffer: layout)), fd,
                                     HoldTable.Target(uuid: uuid, device: entry.id, resource: info.id))
                }
                return .withFD(.success(request.id, ControlResult(buffer: layout)), fd)
            case .release:
                // Answered by the server, which knows the connection.
                guard let r = request.resource, ResourceUUID(string: r) != nil else {
                    throw ControlError(.badRequest, "release takes the UUID that was resolved; got \"\(request.resource ?? "")\"")
                }
                return .release
            case .watch:
                return .watch
            }
        } catch let e as ControlError {
            return .response(.failure(request.id, e))
        } catch {
            return .response(.failure(request.id, ControlError(.internalError, "\(error)")))
        }
    }

    /// A UUID no device here owns, asked of each device's frontend in turn. The owner is
    /// elsewhere, so only what the fd itself says is known: it is a dmabuf or memfd of `size`
    /// bytes; format and geometry are not (reported as "unknown" and 0, `foreign: true`).
    func exportForeign(_ uuid: ResourceUUID, request: ControlRequest) -> ControlReply? {
        for d in directory.devices() {
            guard let ask = d.lookupForeign, let raw = ask(uuid) else { continue }
            let fd = OwnedFileDescriptor(raw)
            let size = Int(lseek(raw, 0, SEEK_END))
            var link = [CChar](repeating: 0, count: 256)
            let n = readlink("/proc/self/fd/\(raw)", &link, 255)
            let target = n > 0 ? String(decoding: link.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
            var layout = BufferLayout(uuid: uuid.description, device: d.id.raw, resource: 0,
                                      handleType: target.hasPrefix("/memfd:") ? "memfd" : "dmabuf",
                                      format: "unknown", fourcc: "", drmFormat: 0, width: 0, height: 0, stride: 0, offset: 0,
                                      size: max(0, size), modifier: DRMFourCC.linearModifier)
            layout.foreign = true
            return .withFD(.success(request.id, ControlResult(buffer: layout)), fd)
        }
        return nil
    }

    func summary(_ r: ResourceInfo, device: GPUDeviceID, now: Double) -> ResourceSummary {
        ResourceSummary(device: device.raw, id: r.id.raw, uuid: r.uuid?.description, format: r.format.description,
                        fourcc: DRMFourCC.name(for: r.format), width: r.width, height: r.height, stride: r.stride,
                        hostBuffer: HostBufferSummary(kind: r.hostBuffer.kind.rawValue, size: r.hostBuffer.size,
                                                      coherency: r.hostBuffer.coherency.rawValue, source: r.hostBuffer.source.rawValue,
                                                      exported: r.hostBuffer.exported, shadowReason: r.hostBuffer.shadowReason),
                        backingEntries: r.backingEntryCount, backingBytes: r.backingBytes, scanouts: r.scanouts,
                        ageSeconds: r.createdAt > 0 ? max(0, now - r.createdAt) : 0,
                        holders: holds?.holders(of: r.uuid, device: device) ?? [])
    }

    /// `DEVICE:ID`, `ID` (must be unique over the devices) or a UUID.
    func resolve(_ reference: String?) throws(ControlError) -> (DeviceDirectory.Entry, ResourceInfo) {
        guard let reference, !reference.isEmpty else { throw ControlError(.badRequest, "missing \"resource\": DEVICE:ID, ID or UUID") }
        let devices = directory.devices()
        if let uuid = ResourceUUID(string: reference) {
            for d in devices {
                if let owner = d.processor.uuids.lookup(uuid), let entry = devices.first(where: { $0.id == owner.device }),
                   let info = entry.processor.resourceInfo(owner.resource) {
                    return (entry, info)
                }
            }
            throw ControlError(.notFound, "no resource has UUID \(uuid) (never assigned, or unreferenced)")
        }
        let parts = reference.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2, let dev = UInt32(parts[0]), let id = UInt32(parts[1]) {
            guard let entry = devices.first(where: { $0.id.raw == dev }) else {
                throw ControlError(.notFound, "no device \(dev) (devices: \(devices.map { String($0.id.raw) }.joined(separator: ", ")))")
            }
            guard let info = entry.processor.resourceInfo(ResourceID(id)) else { throw ControlError(.notFound, "device \(dev) has no resource \(id)") }
            return (entry, info)
        }
        if parts.count == 1, let id = UInt32(reference) {
            let hits = devices.compactMap { d in d.processor.resourceInfo(ResourceID(id)).map { (d, $0) } }
            switch hits.count {
            case 0: throw ControlError(.notFound, "no resource \(id) on any device")
            case 1: return hits[0]
            default: throw ControlError(.ambiguous, "resource \(id) exists on devices \(hits.map { String($0.0.id.raw) }.joined(separator: ", ")); say DEVICE:\(id)")
            }
        }
        throw ControlError(.badRequest, "\"\(reference)\" is not DEVICE:ID, ID or a UUID")
    }
}

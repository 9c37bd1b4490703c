import ControlProtocol
import VirtioCore
import Foundation
import Logging
import Synchronization
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
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
        /// Reply lines not yet sent: the replies to one read's lines (and the events due) go out
        /// in one sendmsg, not one each (sendmsg was 14 % of a request in the fuzz profile).
        var outbox: [UInt8] = []
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
            do throws(Errno) {
                try Poll.wait(&fds, until: monotonicSeconds() + min(1, max(0.05, partialLineTimeout / 2)))
            } catch {
                logger.error("control socket: poll failed: errno \(error.rawValue)")
                return
            }
            if fds[0].revents != 0 {
                // Stopping: watchers still get what happened up to now (the last device leaving).
                for c in clients where !c.closed { deliverEvents(c); flush(c) }
                return
            }
            let polled = clients.count   // clients accepted below are polled from the next round
            if fds[1].revents & Int16(POLLIN) != 0, !acceptClient(&clients) { acceptPausedUntil = monotonicSeconds() + 0.1 }
            let now = monotonicSeconds()
            for (i, c) in clients.prefix(polled).enumerated() where !c.closed {
                let socketEvents = fds[3 + 2 * i].revents
                if socketEvents != 0 { readFrom(c, &chunk) }
                if !c.closed, fds[4 + 2 * i].revents != 0 { deliverEvents(c) }
                flush(c)
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
        flush(c)   // what was answered before the close still reaches the client
        guard !c.closed else { return }   // closed by a failed flush, or before
        c.closed = true
        holds.dropClient(c.key)
        c.subscription?.cancel()
        c.subscription = nil
    }

    /// Queues a reply line. One that carries an fd goes out at once in its own sendmsg, after
    /// the lines before it, so the fd arrives with its own line as before.
    private func send(_ c: Client, _ response: ControlResponse, fd: Int32? = nil) {
        guard !c.closed else { return }
        let queued = c.outbox.count
        c.outbox.append(contentsOf: ControlCodec.encodeLine(response))
        guard let fd else {
            if c.outbox.count >= Self.outboxFlushBytes { flush(c) }
            return
        }
        flush(c, upTo: queued)
        flush(c, fd: fd)
    }

    /// Queued replies beyond this many bytes are sent without waiting for the end of the read.
    static let outboxFlushBytes = 64 * 1024

    /// Sends the first `upTo` queued bytes (all by default), with `fd` attached to the first of
    /// them; a client that does not take them within `sendTimeout` is dropped.
    private func flush(_ c: Client, upTo count: Int? = nil, fd: Int32? = nil) {
        let n = count ?? c.outbox.count
        guard !c.closed, n > 0 else { return }
        do { try UnixSocket.send(c.socket.rawValue, [n == c.outbox.count ? c.outbox : Array(c.outbox[0..<n])], fds: fd.map { [$0] } ?? []) } catch {
            failed(c, error)
            return
        }
        if n == c.outbox.count { c.outbox.removeAll(keepingCapacity: true) } else { c.outbox.removeSubrange(0..<n) }
    }

    private func failed(_ c: Client, _ error: Errno) {
        peerLog.log(.info, key: "send", "control socket: client \(c.credentials) not reading (\(error)); disconnected")
        c.outbox.removeAll()
        close(c)
    }

    private func readFrom(_ c: Client, _ chunk: inout [UInt8]) {
        let received = chunk.withUnsafeMutableBytes { b in
            Result { () throws(Errno) in try retryingEINTR { recv(c.socket.rawValue, b.baseAddress, b.count, Int32(MSG_DONTWAIT)) } }
        }
        let n: Int
        switch received {
        case let .success(count): n = count
        case .failure(.wouldBlock): return
        case .failure:
            close(c)
            return
        }
        if n == 0 {
            if !c.buffer.isEmpty { logger.debug("control socket: client \(c.credentials) left mid-request") }
            close(c)
            return
        }
        c.buffer.append(contentsOf: chunk[0..<n])
        // The lines are handled where they lie; what they took is removed once at the end (not
        // per line: a read of many short requests moved the rest of the buffer for each).
        var consumed = 0
        while !c.closed, let nl = c.buffer[consumed...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = c.buffer[consumed..<nl]
            if line.count > ControlProtocol.maxLineBytes { break }
            consumed = nl + 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            handleLine(line, c)
        }
        if c.closed { return }
        c.buffer.removeSubrange(0..<consumed)
        let pending = c.buffer.firstIndex(of: UInt8(ascii: "\n")) ?? c.buffer.endIndex
        if pending - c.buffer.startIndex > ControlProtocol.maxLineBytes {
            peerLog.log(.info, key: "oversize", "control socket: client \(c.credentials) sent a request over \(ControlProtocol.maxLineBytes) bytes; disconnected")
            send(c, .failure(nil, ControlError(.requestTooLarge, "request line longer than \(ControlProtocol.maxLineBytes) bytes")))
            close(c)
            return
        }
        c.partialSince = c.buffer.isEmpty ? nil : (c.partialSince ?? monotonicSeconds())
    }

    private func handleLine(_ line: ArraySlice<UInt8>, _ c: Client) {
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

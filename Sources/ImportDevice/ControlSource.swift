import Logging
import struct Synchronization.Atomic
import VGPUResolve
import VhostUser
#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import SystemSupport

/// One exporter's control socket: a request connection (made again when it breaks) and a
/// `watch` thread that reports the lifecycle events revoking imports.
final class ControlSource: Sendable {
    let path: String
    let index: Int
    private let timeout: Double
    private let client = Mutex<ResolveClient?>(nil)
    private let log: RateLimitedLogger<String>
    private let stopFD: OwnedFileDescriptor
    private let stopped = Atomic<Bool>(false)
    private let watchEnded = Mutex<Bool>(true)
    /// Whether the last request could not reach the socket: logged on changes only, so a
    /// missing socket is one line, not one per import.
    private let unreachable = Atomic<Bool>(false)

    init(path: String, index: Int, timeout: Double, log: RateLimitedLogger<String>) throws {
        self.path = path
        self.index = index
        self.timeout = timeout
        self.log = log
        self.stopFD = try EventFD.make()
    }

    /// Connects and asks one cheap request, to say at start (one line) whether this socket serves us.
    func probe() {
        _ = try? withClient { c throws(ResolveError) in try c.ping() }
    }

    /// Runs `body` on the connection, connecting first if needed; a broken connection is made
    /// again once (the backend may have restarted at the same path).
    func withClient<T>(_ body: (ResolveClient) throws(ResolveError) -> T) throws(ResolveError) -> T {
        for attempt in 0..<2 {
            let c: ResolveClient
            if let existing = client.withLock({ $0 }) { c = existing } else {
                do { c = try ResolveClient(path: path, timeout: timeout) } catch {
                    unreachable(error)
                    throw error
                }
                client.withLock { $0 = c }
            }
            do {
                let result = try body(c)
                reachable()
                return result
            } catch {
                guard error.isConnectionFailure else { reachable(); throw error }
                client.withLock { if $0 === c { $0 = nil } }
                if attempt == 1 { unreachable(error); throw error }
            }
        }
        throw .connectionLost(path: path, why: "unreachable")   // not reached
    }

    private func unreachable(_ error: ResolveError) {
        if !unreachable.exchange(true, ordering: .acquiringAndReleasing) {
            log.logger.warning("\(error); imports through it fail until it answers")
        }
    }

    private func reachable() {
        if unreachable.exchange(false, ordering: .acquiringAndReleasing) { log.logger.info("control socket \(path): answering again") }
    }

    /// Starts the watch thread: `event` for each event, `lost` when an established watch
    /// connection ends (every import through this socket must then be revoked: its resources
    /// may go unseen). It reconnects every second until `stop`.
    func startWatching(event: @escaping @Sendable (ResolveEvent) -> Void, lost: @escaping @Sendable () -> Void) {
        watchEnded.withLock { $0 = false }
        // The first subscription is made here, before the device serves a request: an unref
        // between an IMPORT and a watch still being set up would otherwise go unseen (QUERY
        // would still catch it, but the mapping would stay until then).
        let first = try? ResolveWatch(path: path, timeout: timeout)
        startThread(name: "import-watch") { [self] in
            defer { watchEnded.withLock { $0 = true } }
            var reported = false
            var pending = first
            while !stopped.load(ordering: .acquiring) {
                do {
                    let watch: ResolveWatch
                    if let p = pending { watch = p; pending = nil } else { watch = try ResolveWatch(path: path, timeout: timeout) }
                    if reported { log.logger.debug("control socket \(path): watching again") }
                    reported = false
                    do { try follow(watch, event: event) } catch {
                        // Events may have been missed from here on: nothing imported through this socket is trusted.
                        if !stopped.load(ordering: .acquiring) { lost() }
                        throw error
                    }
                } catch {
                    // Debug only: an unreachable socket is already reported by the request side.
                    if !stopped.load(ordering: .acquiring), !reported {
                        log.logger.debug("control socket \(path): watch: \(error) (retrying every second)")
                        reported = true
                    }
                }
                if stopped.load(ordering: .acquiring) { break }
                _ = EventFD.wait(stopFD.rawValue, until: monotonicSeconds() + 1)
            }
        }
    }

    private func follow(_ watch: ResolveWatch, event: @Sendable (ResolveEvent) -> Void) throws(ResolveError) {
        var fds = [pollfd(fd: watch.fileDescriptor, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: stopFD.rawValue, events: Int16(POLLIN), revents: 0)]
        while !stopped.load(ordering: .acquiring) {
            do throws(Errno) { try Poll.wait(&fds, until: nil) } catch {
                throw .connectionLost(path: path, why: "poll: errno \(error.rawValue)")
            }
            if fds[1].revents != 0 { return }
            for e in try watch.events() { event(e) }
        }
    }

    /// Ends the watch thread (waits for it, bounded) and drops the connection.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        EventFD.signal(stopFD.rawValue)
        let deadline = monotonicSeconds() + 2
        while !watchEnded.withLock({ $0 }), monotonicSeconds() < deadline { usleep(2_000) }
        client.withLock { $0 = nil }
    }
}

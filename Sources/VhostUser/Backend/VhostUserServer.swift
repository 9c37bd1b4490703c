import Logging
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// Accepts vhost-user frontends on a listening socket, one at a time (vhost-user is one
/// frontend per socket), each served by a fresh device from `makeDevice`.
public final class VhostUserServer: Sendable {
    private let listener: OwnedFileDescriptor
    private let makeDevice: @Sendable () -> any VhostUserDevice
    private let logger: Logger

    public init(listener: OwnedFileDescriptor, logger: Logger, makeDevice: @escaping @Sendable () -> any VhostUserDevice) {
        self.listener = listener
        self.logger = logger
        self.makeDevice = makeDevice
    }

    /// Serves frontends until accept fails or `shouldContinue` says stop (checked after each one).
    public func serve(shouldContinue: @Sendable () -> Bool = { true }) throws(Errno) {
        repeat {
            let socket = try acceptRetryingExhaustion()
            logger.info("frontend connected")
            VhostUserConnection(socket: socket, device: makeDevice(), logger: logger).run()
        } while shouldContinue()
    }

    /// accept(2), waiting out a lack of fds or memory: that is a moment, not the end; the
    /// frontend waits in the backlog while fds are released (issue 11 §4, `ulimit -n 64`).
    private func acceptRetryingExhaustion() throws(Errno) -> OwnedFileDescriptor {
        var logged = false
        while true {
            do { return try UnixSocket.accept(listener) } catch {
                guard error == .tooManyOpenFiles || error == .tooManyOpenFilesInSystem || error == .noMemory
                        || error == .noBufferSpace || error == .connectionAbort else { throw error }
                if !logged { logger.warning("accept failed (\(error)); retrying every 100 ms until fds are free") }
                logged = true
                usleep(100_000)
            }
        }
    }

    /// Serves several listening sockets at once (several devices in one process), one thread
    /// each, and returns when every one's `serve` has returned; `finished(i)` runs on that
    /// socket's thread as soon as its own serving ends. Returns each socket's error, if any.
    public static func serveAll(_ servers: [VhostUserServer], shouldContinue: @escaping @Sendable () -> Bool = { true },
                                finished: @escaping @Sendable (Int) -> Void = { _ in }) -> [Errno?] {
        let errors = Mutex<[Errno?]>(Array(repeating: nil, count: servers.count))
        runOnThreadsAndJoin(name: "vu-listen", count: servers.count) { i in
            do throws(Errno) {
                try servers[i].serve(shouldContinue: shouldContinue)
            } catch {
                servers[i].logger.error("listener stopped: \(error)")
                errors.withLock { $0[i] = error }
            }
            finished(i)
        }
        return errors.withLock { $0 }
    }
}

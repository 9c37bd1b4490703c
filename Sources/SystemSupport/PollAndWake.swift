// Small syscall helpers shared by the display channel and its test peer: a wake channel for
// interrupting waits, bounded poll, socket pairs, threads. Internal unless tests need them.

#if canImport(Glibc)
import Glibc
#endif
import CShims
import SystemPackage

/// `errno` as a typed value.
@inline(__always) public func currentErrno() -> Errno { Errno(rawValue: errno) }

/// A non-blocking socket pair used like an eventfd: `signal()` makes the read end readable
/// until `drain()`. (Swift's Glibc module does not import `eventfd`.)
public struct WakeChannel: Sendable {
    public let readFD: Int32
    public let writeFD: Int32

    public static func make() throws(Errno) -> WakeChannel {
        var sv: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        guard socketpair(AF_UNIX, type, 0, &sv) == 0 else { throw currentErrno() }
        return WakeChannel(readFD: sv[0], writeFD: sv[1])
    }

    /// Makes the read end readable. Never blocks (a full buffer is already "signalled").
    public func signal() {
        var one: UInt8 = 1
        _ = Glibc.send(writeFD, &one, 1, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
    }

    /// Empties the read end.
    public func drain() {
        var buf = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while true {
            let n = withUnsafeMutableBytes(of: &buf) { Glibc.recv(readFD, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 && errno != EINTR { return }
        }
    }

    public func close() {
        _ = Glibc.close(readFD)
        _ = Glibc.close(writeFD)
    }
}

/// What a bounded wait ended with.
public enum WaitOutcome: Equatable {
    /// The fd has the events (or an error/hangup the next syscall will report).
    case ready
    case timedOut
    /// The wake channel was signalled.
    case interrupted
}

/// Waits until `fd` has `events`, the wake channel is signalled, or `deadline` passes
/// (nil: no deadline). EINTR is retried with the remaining time.
public func waitFor(_ fd: Int32, events: Int16, wake: Int32, deadline: ContinuousClock.Instant?) -> WaitOutcome {
    while true {
        var timeoutMS: Int32 = -1
        if let deadline {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero { return .timedOut }
            let (s, atto) = remaining.components
            let ms = s * 1000 + (atto + 999_999_999_999_999) / 1_000_000_000_000_000
            timeoutMS = Int32(clamping: max(ms, 1))
        }
        var fds = (pollfd(fd: fd, events: events, revents: 0),
                   pollfd(fd: wake, events: Int16(POLLIN), revents: 0))
        let r = withUnsafeMutablePointer(to: &fds) {
            $0.withMemoryRebound(to: pollfd.self, capacity: 2) { poll($0, 2, timeoutMS) }
        }
        if r < 0 {
            if errno == EINTR { continue }
            return .ready // let the caller's syscall report the error
        }
        if r == 0 { continue } // re-check the deadline (poll may round down)
        if fds.1.revents != 0 { return .interrupted }
        if fds.0.revents != 0 { return .ready }
    }
}

/// Sets O_NONBLOCK on `fd`.
public func setNonBlocking(_ fd: Int32) throws(Errno) {
    let flags = vgpu_fcntl_int(fd, F_GETFL, 0)
    guard flags >= 0 else { throw currentErrno() }
    guard vgpu_fcntl_int(fd, F_SETFL, flags | O_NONBLOCK) == 0 else { throw currentErrno() }
}

private final class ThreadBody {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}

/// Starts a joinable pthread running `body`.
public func startThread(_ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        // Safety: `arg` is the retained ThreadBody passed below; taken back exactly once.
        let body = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        body.run()
        return nil
    }, context)
    guard rc == 0 else {
        Unmanaged<ThreadBody>.fromOpaque(context).release()
        throw Errno(rawValue: rc)
    }
    return thread
}

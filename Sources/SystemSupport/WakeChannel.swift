// Used by DisplayChannel until it moves to EventFD/WorkerThread: a socket pair used as a
// wake-up. Everything else wakes threads with EventFD; the integrator removes this file.

#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

// Used by DisplayChannel until it moves to EventFD/WorkerThread
/// A non-blocking socket pair used like an eventfd: `signal()` makes the read end readable
/// until `drain()`.
public struct WakeChannel: Sendable {
    public let readFD: Int32
    public let writeFD: Int32

    public static func make() throws(Errno) -> WakeChannel {
        var sv: [Int32] = [-1, -1]
        let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        _ = try retryingEINTR { socketpair(AF_UNIX, type, 0, &sv) }
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
        while (withUnsafeMutableBytes(of: &buf) { b in
            (try? retryingEINTR { Glibc.recv(readFD, b.baseAddress, b.count, Int32(MSG_DONTWAIT)) }) ?? 0
        }) > 0 {}
    }

    public func close() {
        _ = Glibc.close(readFD)
        _ = Glibc.close(writeFD)
    }
}

// The wake-up primitive: an eventfd (a queue kick or call, or an internal "stop"/"look again").

import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd: `signal` makes it readable until `drain`; wait for it with `Poll`.
public enum EventFD {
    public static func make(nonBlocking: Bool = true) throws(Errno) -> OwnedFileDescriptor {
        let flags = Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0)
        return OwnedFileDescriptor(try retryingEINTR { eventfd(0, flags) })
    }

    /// Adds 1 to the counter. Errors (a closed peer) are ignored: a signal nobody waits for is harmless.
    public static func signal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { try? writeRetryingEINTR(fd, $0) }
    }

    /// Reads and clears the counter; returns 0 if it was not signalled (non-blocking fd).
    @discardableResult
    public static func drain(_ fd: Int32) -> UInt64 {
        var value: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &value) { (try? readRetryingEINTR(fd, into: $0)) ?? 0 }
        return n == 8 ? value : 0
    }

    /// Waits until the eventfd is signalled (true) or `deadline` passes (false; nil: no deadline).
    /// Does not drain it. `until: monotonicSeconds()` asks "signalled now?".
    public static func wait(_ fd: Int32, until deadline: Double?) -> Bool {
        ((try? Poll.wait([(fd, Int16(POLLIN))], until: deadline))?[0] ?? 0) != 0
    }
}

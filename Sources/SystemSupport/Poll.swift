// Bounded poll(2): every wait in the project that has a deadline goes through here, which
// retries EINTR with the time that is left.

import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

public enum Poll {
    /// Polls `fds` (revents cleared first) until one has events or `deadline`
    /// (`monotonicSeconds()`; nil: no deadline) passes. Returns how many have events, 0 on
    /// timeout; a deadline already past polls once without waiting. EINTR is retried with the
    /// remaining time. For loops that keep their pollfd array.
    @discardableResult
    public static func wait(_ fds: inout [pollfd], until deadline: Double?) throws(Errno) -> Int {
        for i in fds.indices { fds[i].revents = 0 }
        while true {
            let ms = timeoutMilliseconds(until: deadline)
            let n = poll(&fds, nfds_t(fds.count), ms)
            if n >= 0 { return Int(n) }
            let e = currentErrno()
            if e != .interrupted { throw e }
            if ms == 0 { return 0 }
        }
    }

    /// `wait` for a list of (fd, events); returns each fd's revents, all zero on timeout.
    public static func wait(_ fds: [(fd: Int32, events: Int16)], until deadline: Double?) throws(Errno) -> [Int16] {
        var polled = fds.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        try wait(&polled, until: deadline)
        return polled.map(\.revents)
    }

    /// Waits until `fd` has `events`; false on timeout. `timeout` in seconds, nil: no limit.
    public static func wait(_ fd: Int32, events: Int16, timeout: Double?) throws(Errno) -> Bool {
        try wait([(fd, events)], until: timeout.map { monotonicSeconds() + max(0, $0) })[0] != 0
    }

    /// Waits until `fd` is readable (or hung up), at most until `deadline` (`timedOut`), or until
    /// `wake` (an eventfd or a wake channel's read end) is readable (`canceled`).
    public static func waitReadable(_ fd: Int32, until deadline: Double?, wake: Int32?) throws(Errno) {
        while true {
            let revents = try wait([(fd, Int16(POLLIN)), (wake ?? -1, Int16(POLLIN))], until: deadline)
            if revents[1] != 0 { throw .canceled }
            if revents[0] != 0 { return }
            if let deadline, monotonicSeconds() >= deadline { throw .timedOut }
        }
    }

    /// poll(2)'s timeout for `deadline`: -1 for none, rounded up so a wait never ends early.
    static func timeoutMilliseconds(until deadline: Double?) -> Int32 {
        guard let deadline else { return -1 }
        let left = deadline - monotonicSeconds()
        guard left > 0 else { return 0 }
        return Int32(min((left * 1000).rounded(.up), 1_000_000))
    }
}

// The clocks: seconds on CLOCK_MONOTONIC as a Double for deadlines (`monotonicSeconds() + 2`),
// and seconds since the epoch for times people read (creation times, event stamps).

#if canImport(Glibc)
import Glibc
#endif

/// Seconds on the monotonic clock (deadlines, bounded waits).
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Seconds since the Unix epoch (CLOCK_REALTIME), for creation times and event stamps.
public func wallClockSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

extension Duration {
    /// The duration in seconds, for `monotonicSeconds()` deadlines.
    public var inSeconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

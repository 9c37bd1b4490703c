import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Logs guest-triggered errors without letting a guest flood the log: at most `burst` lines per
/// `interval` seconds per key, then one "suppressed N" line when the window reopens.
public final class RateLimitedLogger: Sendable {
    public let logger: Logger
    private let burst: Int
    private let interval: Double
    private struct Window { var start: Double; var count: Int; var suppressed: Int }
    private let windows = Mutex<[String: Window]>([:])

    public init(logger: Logger, burst: Int = 10, interval: Double = 1.0) {
        self.logger = logger
        self.burst = burst
        self.interval = interval
    }

    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Logs `message()` under `key` unless that key is over its budget.
    public func log(_ level: Logger.Level = .warning, key: String, _ message: @autoclosure () -> String) {
        let t = Self.now()
        let (emit, suppressed) = windows.withLock { w -> (Bool, Int) in
            var win = w[key] ?? Window(start: t, count: 0, suppressed: 0)
            var reported = 0
            if t - win.start >= interval {
                reported = win.suppressed
                win = Window(start: t, count: 0, suppressed: 0)
            }
            win.count += 1
            let ok = win.count <= burst
            if !ok { win.suppressed += 1 }
            if w.count > 1024, w[key] == nil { w.removeAll() }   // bounded: keys come from a fixed set, but be safe
            w[key] = win
            return (ok, reported)
        }
        if suppressed > 0 { logger.log(level: level, "\(key): \(suppressed) similar messages suppressed") }
        if emit { logger.log(level: level, "\(message())") }
    }
}

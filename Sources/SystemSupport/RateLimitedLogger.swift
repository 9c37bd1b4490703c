// A Logger that writes at most N lines per key and second (guest- or peer-triggered lines).

import Logging
import Synchronization

/// A logger for what a guest or peer got wrong: each key gets at most `perSecond` lines a
/// second; the rest are counted and reported with the next line of that key.
public final class RateLimitedLogger<Key: Hashable & Sendable>: Sendable {
    public let logger: Logger
    private let limiter: Mutex<LogRateLimiter<Key>>

    public init(logger: Logger, perSecond: Int = 10, overflowKey: Key) {
        self.logger = logger
        self.limiter = Mutex(LogRateLimiter(limit: perSecond, overflowKey: overflowKey))
    }

    /// Logs `message()` under `key` unless that key is over its budget.
    public func log(_ level: Logger.Level = .warning, key: Key, _ message: @autoclosure () -> String) {
        let decision = limiter.withLock { $0.admit(key, now: .now) }
        guard case let .emit(suppressed) = decision else { return }
        if suppressed > 0 {
            logger.log(level: level, "\(message()) (\(suppressed) similar messages suppressed)")
        } else {
            logger.log(level: level, "\(message())")
        }
    }
}

extension RateLimitedLogger where Key == String {
    public convenience init(logger: Logger, perSecond: Int = 10) {
        self.init(logger: logger, perSecond: perSecond, overflowKey: "other")
    }
}

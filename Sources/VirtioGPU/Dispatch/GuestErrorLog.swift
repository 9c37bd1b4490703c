import Logging
import Synchronization

/// Decides which guest-error log lines are written: at most `limit` per second for each kind,
/// the rest counted and reported as "suppressed K" with the next line of that kind.
///
/// A kind is a (command type, response code) pair; unknown command types share one kind, and the
/// number of kinds tracked is bounded, so a guest cannot grow the table.
public struct LogRateLimiter: Sendable {
    public struct Kind: Hashable, Sendable {
        public let command: UInt32
        public let code: UInt32
        public init(command: UInt32, code: UInt32) {
            self.command = command
            self.code = code
        }
    }

    public enum Decision: Equatable, Sendable {
        /// Write the line; `suppressed` lines of this kind were dropped in the window before.
        case emit(suppressed: Int)
        case drop
    }

    private struct Window {
        var start: ContinuousClock.Instant
        var emitted: Int
        var suppressed: Int
    }

    public let limit: Int
    public let window: Duration
    public let maxKinds: Int
    private var windows: [Kind: Window] = [:]

    public init(limit: Int, window: Duration = .seconds(1), maxKinds: Int = 256) {
        self.limit = limit
        self.window = window
        self.maxKinds = maxKinds
    }

    public mutating func admit(_ kind: Kind, now: ContinuousClock.Instant) -> Decision {
        var kind = kind
        if windows[kind] == nil, windows.count >= maxKinds { kind = Kind(command: 0, code: 0) }   // overflow bucket
        var w = windows[kind] ?? Window(start: now, emitted: 0, suppressed: 0)
        var carried = 0
        if now - w.start >= window {
            carried = w.suppressed
            w = Window(start: now, emitted: 0, suppressed: 0)
        }
        let decision: Decision
        if w.emitted < limit {
            w.emitted += 1
            decision = .emit(suppressed: carried)
        } else {
            w.suppressed += 1 + carried
            decision = .drop
        }
        windows[kind] = w
        return decision
    }
}

/// Logs what the guest got wrong, rate limited per kind (the guest is untrusted and can send
/// millions of bad commands a second).
final class GuestErrorLog: Sendable {
    let logger: Logger
    private let limiter: Mutex<LogRateLimiter>

    init(logger: Logger, perSecond: Int) {
        self.logger = logger
        self.limiter = Mutex(LogRateLimiter(limit: perSecond))
    }

    /// Logs `message` at warning level unless this kind is over its budget.
    func report(command: UInt32, code: UInt32, _ message: @autoclosure () -> String) {
        // Unknown command types share one kind: a guest cannot make kinds up.
        let kindCommand = GPUCommand.name(forType: command) == "unknown" ? UInt32.max : command
        let decision = limiter.withLock { $0.admit(.init(command: kindCommand, code: code), now: .now) }
        guard case let .emit(suppressed) = decision else { return }
        if suppressed > 0 {
            logger.warning("\(message()) (\(suppressed) similar messages suppressed)")
        } else {
            logger.warning("\(message())")
        }
    }
}

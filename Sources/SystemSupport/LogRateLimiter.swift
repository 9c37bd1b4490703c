// The per-key log rate limit (a pure value; RateLimitedLogger applies it to a Logger).

/// Decides which log lines about guest or peer misbehaviour are written: at most `limit` per
/// `window` for each key, the rest counted and reported as "suppressed K" with the next line of
/// that key. The key table is bounded (new keys past `maxKeys` share `overflowKey`), so a guest
/// cannot grow it.
public struct LogRateLimiter<Key: Hashable & Sendable>: Sendable {
    public enum Decision: Equatable, Sendable {
        /// Write the line; `suppressed` lines of this key were dropped in the window before.
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
    public let maxKeys: Int
    public let overflowKey: Key
    private var windows: [Key: Window] = [:]

    public init(limit: Int, window: Duration = .seconds(1), maxKeys: Int = 256, overflowKey: Key) {
        self.limit = limit
        self.window = window
        self.maxKeys = maxKeys
        self.overflowKey = overflowKey
    }

    public mutating func admit(_ key: Key, now: ContinuousClock.Instant) -> Decision {
        var key = key
        if windows[key] == nil, windows.count >= maxKeys { key = overflowKey }
        var w = windows[key] ?? Window(start: now, emitted: 0, suppressed: 0)
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
        windows[key] = w
        return decision
    }
}

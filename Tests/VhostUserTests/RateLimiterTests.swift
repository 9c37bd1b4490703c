import Testing
import VhostUser
import SystemSupport

@Suite struct RateLimiterTests {
    struct Kind: Hashable, Sendable { let command: UInt32; let code: UInt32 }

    @Test func limitsPerKindAndReportsSuppressedCount() {
        var l = LogRateLimiter<Kind>(limit: 3, overflowKey: Kind(command: 0, code: 0))
        let k = Kind(command: 0x105, code: 0x1205)
        let t0 = ContinuousClock.now
        let first = (0..<5).map { _ in l.admit(k, now: t0) }
        #expect(first == [.emit(suppressed: 0), .emit(suppressed: 0), .emit(suppressed: 0), .drop, .drop])
        // Another kind has its own budget.
        #expect(l.admit(Kind(command: 0x101, code: 0x1203), now: t0) == .emit(suppressed: 0))
        // Next window: the first line carries the count.
        #expect(l.admit(k, now: t0 + .milliseconds(1100)) == .emit(suppressed: 2))
        #expect(l.admit(k, now: t0 + .milliseconds(1200)) == .emit(suppressed: 0))
    }

    @Test func keyTableIsBounded() {
        var l = LogRateLimiter<Kind>(limit: 1, maxKeys: 2, overflowKey: Kind(command: 0, code: 0))
        let t0 = ContinuousClock.now
        #expect(l.admit(.init(command: 1, code: 1), now: t0) == .emit(suppressed: 0))
        #expect(l.admit(.init(command: 2, code: 1), now: t0) == .emit(suppressed: 0))
        // New kinds past the cap share one overflow bucket.
        #expect(l.admit(.init(command: 3, code: 1), now: t0) == .emit(suppressed: 0))
        #expect(l.admit(.init(command: 4, code: 1), now: t0) == .drop)
        #expect(l.admit(.init(command: 5, code: 1), now: t0) == .drop)
    }

    @Test func zeroLimitDropsEverything() {
        var l = LogRateLimiter<Kind>(limit: 0, overflowKey: Kind(command: 0, code: 0))
        #expect(l.admit(.init(command: 1, code: 1), now: .now) == .drop)
    }
}


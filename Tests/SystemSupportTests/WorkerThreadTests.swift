import Testing
import struct Synchronization.Atomic
import SystemPackage
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct WorkerThreadTests {
    /// The kernel's name for the calling thread (/proc/thread-self/comm, newline dropped).
    static func currentThreadName() -> String {
        let fd = open("/proc/thread-self/comm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 32)
        let n = bytes.withUnsafeMutableBytes { (try? readRetryingEINTR(fd, into: $0)) ?? 0 }
        return String(decoding: bytes[0..<n], as: UTF8.self).trimmingSuffix("\n")
    }

    /// The body waits on its stop event; `stop()` wakes it and returns after it has returned.
    @Test func stopSignalsTheStopEventAndJoins() throws {
        let finished = Atomic<Bool>(false)
        let name = Mutex("")
        let worker = try WorkerThread(name: "test-worker") { stop in
            name.withLock { $0 = Self.currentThreadName() }
            _ = EventFD.wait(stop, until: nil)
            finished.store(true, ordering: .releasing)
        }
        worker.stop()
        let done = finished.load(ordering: .acquiring)
        #expect(done)
        #expect(name.withLock { $0 } == "test-worker")
        worker.stop()   // idempotent
    }

    /// Dropping the last reference stops and joins.
    @Test func droppingJoins() throws {
        let finished = Atomic<Bool>(false)
        do {
            _ = try WorkerThread(name: "dropped") { stop in
                _ = EventFD.wait(stop, until: nil)
                finished.store(true, ordering: .releasing)
            }
        }
        let done = finished.load(ordering: .acquiring)
        #expect(done)
    }

    @Test func runOnThreadsAndJoinRunsEveryIndex() {
        let seen = Mutex(Set<Int>())
        runOnThreadsAndJoin(name: "each", count: 4) { i in seen.withLock { _ = $0.insert(i) } }
        #expect(seen.withLock { $0 } == [0, 1, 2, 3])
    }
}

@Suite struct PollTests {
    @Test func waitEndsAtTheDeadline() throws {
        let event = try EventFD.make()
        let start = monotonicSeconds()
        #expect(!EventFD.wait(event.rawValue, until: start + 0.05))
        #expect(monotonicSeconds() - start >= 0.05)
    }

    @Test func aSignalledEventFDIsReadyUntilDrained() throws {
        let event = try EventFD.make()
        EventFD.signal(event.rawValue)
        EventFD.signal(event.rawValue)
        #expect(EventFD.wait(event.rawValue, until: monotonicSeconds()))
        #expect(EventFD.drain(event.rawValue) == 2)
        #expect(!EventFD.wait(event.rawValue, until: monotonicSeconds()))
    }

    @Test func waitReadableIsCanceledByTheWakeFD() throws {
        let (a, b) = try UnixSocket.pair()   // b kept open: a hung-up socket is readable
        defer { withExtendedLifetime(b) {} }
        let wake = try EventFD.make()
        EventFD.signal(wake.rawValue)
        #expect(throws: Errno.canceled) { try Poll.waitReadable(a.rawValue, until: nil, wake: wake.rawValue) }
        #expect(throws: Errno.timedOut) { try Poll.waitReadable(a.rawValue, until: monotonicSeconds() + 0.01, wake: nil) }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}

import Foundation
import SystemSupport
import Testing

@Suite struct ReplaceableCallbackTests {
    @Test func callsTheCurrentCallbackAndNothingWhenCleared() {
        let callback = ReplaceableCallback<Int>()
        let seen = Mutex<[String]>([])
        callback(1)                                        // none set: nothing happens
        #expect(!callback.isSet)
        callback.set { n in seen.withLock { $0.append("a\(n)") } }
        callback(2)
        callback.set { n in seen.withLock { $0.append("b\(n)") } }
        callback(3)
        callback.set(nil)
        callback(4)
        #expect(seen.withLock { $0 } == ["a2", "b3"])
    }

    /// The reason the type exists: a `Mutex` holding a closure directly gets the closure wrapped
    /// in more thunks on every read (the call depth grows by frames per earlier call). Here
    /// 5,000 calls must all run at the same depth.
    @Test func callDepthDoesNotGrowWithCalls() {
        let callback = ReplaceableCallback<Int>()
        let depths = Mutex<[Int]>([])
        callback.set { _ in
            let depth = Thread.callStackReturnAddresses.count
            depths.withLock { $0.append(depth) }
        }
        for i in 0..<5_000 { callback(i) }
        let seen = depths.withLock { $0 }
        #expect(seen.count == 5_000)
        #expect(Set(seen).count == 1, "call depth went from \(seen.first ?? 0) to \(seen.max() ?? 0) frames")
    }

    @Test func aCallbackMayReplaceItself() {
        let callback = ReplaceableCallback<Int>()
        let calls = Mutex(0)
        callback.set { _ in
            calls.withLock { $0 += 1 }
            callback.set(nil)                              // called outside the lock: no deadlock
        }
        callback(1)
        callback(2)
        #expect(calls.withLock { $0 } == 1)
    }
}

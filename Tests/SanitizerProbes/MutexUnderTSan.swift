// Is ThreadSanitizer able to see Synchronization.Mutex with this toolchain? Two threads add to
// a counter touched only inside `withLock` (Mutex) or between pthread_mutex_lock/unlock
// (`pthread` argument). No update is ever lost (the total is printed), so any TSan report here
// is a false positive. Measured 2026-12-07 with Swift 6.3.1: a report on every run with Mutex
// (its contended path is a futex in the uninstrumented libswiftSynchronization.so), none with
// pthread_mutex (TSan intercepts it). scripts/sanitize runs both before the fast tests.
import Glibc
import Synchronization

final class Counter: @unchecked Sendable { var value = 0 }
let counter = Counter()
let mutex = Mutex(())
nonisolated(unsafe) var plain = pthread_mutex_t()
let usePthread = CommandLine.arguments.dropFirst().first == "pthread"

func addMany(_: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    for _ in 0..<200_000 {
        if usePthread {
            pthread_mutex_lock(&plain); counter.value += 1; pthread_mutex_unlock(&plain)
        } else {
            mutex.withLock { _ in counter.value += 1 }
        }
    }
    return nil
}

pthread_mutex_init(&plain, nil)
var a = pthread_t(), b = pthread_t()
pthread_create(&a, nil, { addMany($0) }, nil)
pthread_create(&b, nil, { addMany($0) }, nil)
pthread_join(a, nil)
pthread_join(b, nil)
print("\(usePthread ? "pthread_mutex" : "Synchronization.Mutex"): total \(counter.value) of 400000\(counter.value == 400_000 ? " (no update lost)" : " (UPDATES LOST)")")

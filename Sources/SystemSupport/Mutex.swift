// The project's `Mutex`: Synchronization.Mutex, except in ThreadSanitizer builds
// (scripts/sanitize passes -DVGPU_TSAN_LOCKS), where it is a pthread mutex TSan intercepts.
//
// Why: Synchronization.Mutex on Linux locks with futex system calls inside the standard
// library, which is not built with TSan, so TSan never sees the acquire and reports state that
// is only touched under the lock as racing. Measured, not argued: Tests/SanitizerProbes/
// MutexUnderTSan.swift loses no update and gets a TSan report every run with
// Synchronization.Mutex, none with pthread_mutex_lock. With the swap a TSan report is a race.
//
// Files that use `Mutex` import SystemSupport and not all of Synchronization (`import struct
// Synchronization.Atomic` where they need atomics): a type name imported from two modules is
// ambiguous once the two are different types. scripts/check-layers checks that rule, since
// only the TSan build would notice.

import Synchronization

#if VGPU_TSAN_LOCKS
import Glibc

public typealias Mutex = ThreadSanitizerMutex

/// The part of Synchronization.Mutex's interface the project uses, over a pthread mutex.
public struct ThreadSanitizerMutex<Value: ~Copyable>: ~Copyable, @unchecked Sendable {
    private final class Storage {
        let lock: UnsafeMutablePointer<pthread_mutex_t>
        var value: Value
        init(_ value: consuming Value) {
            lock = .allocate(capacity: 1)
            pthread_mutex_init(lock, nil)
            self.value = value
        }
        deinit {
            pthread_mutex_destroy(lock)
            lock.deallocate()
        }
    }
    private let storage: Storage

    public init(_ initialValue: consuming Value) { storage = Storage(initialValue) }

    public borrowing func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        pthread_mutex_lock(storage.lock)
        defer { pthread_mutex_unlock(storage.lock) }
        return try body(&storage.value)
    }

    public borrowing func withLockIfAvailable<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result? {
        guard pthread_mutex_trylock(storage.lock) == 0 else { return nil }
        defer { pthread_mutex_unlock(storage.lock) }
        return try body(&storage.value)
    }
}
#else
public typealias Mutex = Synchronization.Mutex
#endif

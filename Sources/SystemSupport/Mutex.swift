// The project's `Mutex`: Synchronization.Mutex, except in ThreadSanitizer builds
// (scripts/sanitize passes -DVGPU_TSAN_LOCKS), where a pthread mutex TSan intercepts is held
// around it.
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

/// Synchronization.Mutex with a pthread mutex held around each critical section: the value and
/// its lock stay the standard library's, TSan sees the pthread lock's acquire and release. The
/// same signatures as Synchronization.Mutex, and `@_transparent` like its methods, so call
/// sites compile to concrete code in both builds (a generic, non-inlined `withLock` would
/// reabstract a function-typed value on every call: ReplaceableCallback.swift says what that costs).
public struct ThreadSanitizerMutex<Value: ~Copyable>: ~Copyable, Sendable {
    @usableFromInline let value: Synchronization.Mutex<Value>
    @usableFromInline let lock: PthreadMutexBox

    @_alwaysEmitIntoClient @_transparent
    public init(_ initialValue: consuming sending Value) {
        value = Synchronization.Mutex(initialValue)
        lock = PthreadMutexBox()
    }

    @_alwaysEmitIntoClient @_transparent
    public borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        lock.lock()
        defer { lock.unlock() }
        return try value.withLock(body)
    }

    @_alwaysEmitIntoClient @_transparent
    public borrowing func withLockIfAvailable<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result? {
        guard lock.tryLock() else { return nil }
        defer { lock.unlock() }
        return try value.withLockIfAvailable(body)
    }
}

/// A heap-allocated pthread mutex (its address must not move).
@usableFromInline final class PthreadMutexBox: @unchecked Sendable {
    @usableFromInline let raw: UnsafeMutablePointer<pthread_mutex_t>

    @usableFromInline init() {
        raw = .allocate(capacity: 1)
        pthread_mutex_init(raw, nil)
    }

    deinit {
        pthread_mutex_destroy(raw)
        raw.deallocate()
    }

    @inlinable func lock() { pthread_mutex_lock(raw) }
    @inlinable func unlock() { pthread_mutex_unlock(raw) }
    @inlinable func tryLock() -> Bool { pthread_mutex_trylock(raw) == 0 }
}
#else
public typealias Mutex = Synchronization.Mutex
#endif

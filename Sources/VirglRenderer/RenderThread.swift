import CShims
import Dispatch
import struct Synchronization.Atomic
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// One OS thread that runs jobs in the order they were queued. virglrenderer is not thread-safe
/// and its GL contexts are current on one thread, so every call into it goes through here.
/// Queueing never waits for the thread; callers wait for a result only if they choose to.
final class RenderThread: Sendable {
    private struct JobQueue {
        var jobs: [@Sendable () -> Void] = []
        var head = 0
        var stopping = false

        mutating func pop() -> (@Sendable () -> Void)? {
            guard head < jobs.count else { return nil }
            let job = jobs[head]
            head += 1
            if head == jobs.count { jobs.removeAll(keepingCapacity: true); head = 0 }
            return job
        }
    }

    private let queue = Mutex(JobQueue())
    /// One signal per queued job, plus one for stop.
    private let wakeup = DispatchSemaphore(value: 0)
    /// The thread, joined by `stop`. It holds this object until `loop` returns.
    private let thread = Mutex<WorkerThread?>(nil)
    /// `pthread_self()` of the thread, 0 until it runs (pthread_t is never 0 on glibc).
    private let threadID = Atomic<UInt>(0)

    init(name: String) {
        let worker: WorkerThread
        do { worker = try WorkerThread(name: name) { [self] _ in loop() } } catch {
            preconditionFailure("cannot start \(name): \(error)")   // resource exhaustion, not guest input
        }
        thread.withLock { $0 = worker }
    }

    /// True on the render thread itself (where waiting for a job would deadlock).
    var isCurrent: Bool { threadID.load(ordering: .acquiring) == UInt(pthread_self()) }

    /// Queues `job`; false (and the job dropped) once `stop` was called.
    @discardableResult
    func enqueue(_ job: @escaping @Sendable () -> Void) -> Bool {
        let queued = queue.withLock { q -> Bool in
            guard !q.stopping else { return false }
            q.jobs.append(job)
            return true
        }
        if queued { wakeup.signal() }
        return queued
    }

    /// Lets the jobs queued so far run, then `lastJob`, then ends the thread. `lastJob` is
    /// queued and further jobs refused in one step, so nothing can slip in after it. Waits
    /// for the end unless called on the render thread itself (from a job), where waiting
    /// would deadlock.
    func stop(lastJob: (@Sendable () -> Void)? = nil) {
        let first = queue.withLock { q -> Bool in
            guard !q.stopping else { return false }
            if let lastJob { q.jobs.append(lastJob) }
            q.stopping = true
            return true
        }
        guard first else { return }
        if lastJob != nil { wakeup.signal() }
        wakeup.signal()
        if !isCurrent { thread.withLock { $0 }?.join() }
    }

    private func loop() {
        threadID.store(UInt(pthread_self()), ordering: .releasing)
        while true {
            wakeup.wait()
            let next = queue.withLock { q -> (job: (@Sendable () -> Void)?, stop: Bool) in
                let job = q.pop()
                return (job, job == nil && q.stopping)
            }
            if let job = next.job { job() }
            if next.stop { break }
        }
    }
}

/// A value moved to or from the render thread while its sender waits: never used on two
/// threads at once, which the compiler cannot see.
struct HandOff<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// A result slot written on the render thread and read by the waiting caller after a semaphore.
final class ResultSlot<Value, Failure: Error>: @unchecked Sendable {
    var result: Result<Value, Failure>?
}

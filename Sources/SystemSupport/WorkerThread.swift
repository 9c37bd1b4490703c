// Threads: the one place the project starts an OS thread. Queue workers and socket loops block
// in poll(2), so they get real threads rather than tasks on Swift's cooperative pool.
// `WorkerThread` (modelled on crosvm's base::WorkerThread) is the thread with a stop event and
// a join; `startThread(name:)` is the detached form for loops that end by themselves.

import CShims
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A named OS thread with a stop event, joined by `stop()` or when dropped.
public final class WorkerThread: Sendable {
    public let name: String
    /// An eventfd that `stop()` signals. The body polls it next to its own fds and returns once
    /// it is readable (it is passed to the body too, as a raw fd).
    public let stopEvent: OwnedFileDescriptor
    private let handle: Mutex<pthread_t?>

    /// Starts `body(stopEvent)` on a new thread named `name`.
    public init(name: String, _ body: @escaping @Sendable (_ stopEvent: Int32) -> Void) throws(Errno) {
        let stop = try EventFD.make()
        self.name = name
        self.stopEvent = stop
        // The body holds the eventfd too, so it stays open for as long as the thread can poll it.
        handle = Mutex(try spawnThread(name: name) { body(stop.rawValue) })
    }

    /// Signals the stop event and waits for the body to return. Idempotent.
    public func stop() {
        EventFD.signal(stopEvent.rawValue)
        join()
    }

    /// Waits for the body to return without asking it to. Idempotent. Called on the thread
    /// itself (its body dropped the last reference) it detaches instead: a thread cannot join itself.
    public func join() {
        guard let thread = handle.withLock({ h -> pthread_t? in defer { h = nil }; return h }) else { return }
        if pthread_equal(thread, pthread_self()) != 0 { pthread_detach(thread) } else { pthread_join(thread, nil) }
    }

    deinit { stop() }
}

/// Starts a detached thread named `name` (a connection's loop, a worker that lives as long as
/// the process). Failing to make a thread is resource exhaustion, not guest input: it traps.
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    do throws(Errno) { try startDetachedThread(name: name, body) } catch {
        preconditionFailure("cannot start a thread: \(error)")
    }
}

/// Runs `body(0..<count)` each on its own thread, named `name-i`, and returns when every one
/// has returned (the backend's listener threads, one per socket path).
public func runOnThreadsAndJoin(name: String, count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let threads = (0..<count).map { i -> WorkerThread in
        do throws(Errno) { return try WorkerThread(name: "\(name)-\(i)") { _ in body(i) } } catch {
            preconditionFailure("cannot start a thread: \(error)")
        }
    }
    for thread in threads { thread.join() }
}

/// `startThread(name:)` for callers that can go on without the thread (the display mailbox
/// refuses frames instead): the failure is thrown, not trapped.
public func startDetachedThread(name: String, _ body: @escaping @Sendable () -> Void) throws(Errno) {
    pthread_detach(try spawnThread(name: name, body))
}

/// The one place a thread is created: a joinable thread running `body`, named `name` when given.
private func spawnThread(name: String?, _ body: @escaping @Sendable () -> Void) throws(Errno) -> pthread_t {
    final class Start: @unchecked Sendable {   // handed to the new thread exactly once
        let body: @Sendable () -> Void, name: String?
        init(_ body: @escaping @Sendable () -> Void, _ name: String?) { self.body = body; self.name = name }
    }
    let start = Unmanaged.passRetained(Start(body, name)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        // Safety: `arg` is the retained Start passed below; taken back exactly once.
        let start = Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue()
        if let name = start.name { vgpu_set_thread_name(name) }
        start.body()
        return nil
    }, start)
    guard rc == 0 else {
        Unmanaged<Start>.fromOpaque(start).release()
        throw Errno(rawValue: rc)
    }
    return thread
}

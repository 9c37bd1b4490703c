import Dispatch
import struct Synchronization.Atomic
import VirglRenderer
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// Fences in flight and the thread that collects them from virglrenderer. With virglrenderer's
/// sync thread (VIRGL_RENDERER_THREAD_SYNC), this thread sleeps in poll(2) on its fence eventfd
/// and calls `virgl_renderer_poll` (on the render thread) as soon as a fence retired, else
/// after 1 ms (the fallback: see `start`). Without it, `virgl_renderer_poll` runs every
/// millisecond while any fence is pending. Either way, nothing runs while no fence is pending.
final class FencePoller: @unchecked Sendable {
    private struct Pending { let fenceID: UInt64; let context: UInt32; let completed: @Sendable () -> Void }
    private let pending = Mutex<[Pending]>([])
    private let wake = DispatchSemaphore(value: 0)
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    /// Wakes the thread out of poll(2) at `stop`.
    private let stopEvent = Atomic<Int32>(-1)

    func start(_ virgl: VirglRenderer) {
        let weakVirgl = WeakBox(virgl)
        let fenceFD = (try? virgl.sync { $0.fencePollFD }) ?? -1
        if fenceFD >= 0 { stopEvent.store((try? EventFD.make())?.release() ?? -1, ordering: .releasing) }
        let stopFD = stopEvent.load(ordering: .acquiring)
        startPollThread { [self] in
            while !stopping.load(ordering: .acquiring) {
                if pending.withLock({ $0.isEmpty }) { wake.wait(); continue }
                if fenceFD >= 0 && stopFD >= 0 {
                    // Readable once virglrenderer's sync thread saw a fence retire (virgl_renderer_poll
                    // drains it): such fences complete at once. The 1 ms timeout stays as the
                    // fallback poll: measured with virglrenderer 0.10.4 on llvmpipe, fences after
                    // a guest context's SUBMIT_3D (kmscube) never made the fd readable, and only
                    // virgl_renderer_poll retired them.
                    var fds = [pollfd(fd: fenceFD, events: Int16(POLLIN), revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
                    _ = try? Poll.wait(&fds, until: monotonicSeconds() + 0.001)
                    if stopping.load(ordering: .acquiring) { break }
                } else {
                    usleep(1000)
                }
                guard let virgl = weakVirgl.value else { break }
                let done = (try? virgl.sync { $0.pollFences() }) ?? []
                guard !done.isEmpty else { continue }
                // Callbacks run under the lock (they only queue the chain and signal an eventfd),
                // so `pendingCount` never reads 0 while a completion is still on its way.
                pending.withLock { p in
                    for c in done {
                        if let i = p.firstIndex(where: { $0.fenceID == c.fenceID && $0.context == c.contextID }) {
                            p[i].completed()
                            p.remove(at: i)
                        }
                    }
                }
            }
            finished.signal()
        }
    }

    func expect(_ fenceID: UInt64, context: UInt32, _ completed: @escaping @Sendable () -> Void) {
        pending.withLock { $0.append(Pending(fenceID: fenceID, context: context, completed: completed)) }
        wake.signal()
    }

    func cancelLast() { pending.withLock { _ = $0.popLast() } }

    var pendingCount: Int { pending.withLock { $0.count } }

    /// Device reset: fences pending are dropped (their chains were given back with the queue).
    func dropAll() { pending.withLock { $0.removeAll() } }

    func stop() {
        stopping.store(true, ordering: .releasing)
        wake.signal()
        let fd = stopEvent.load(ordering: .acquiring)
        if fd >= 0 { EventFD.signal(fd) }
    }

    deinit {
        let fd = stopEvent.load(ordering: .acquiring)
        if fd >= 0 { close(fd) }
    }

    private final class WeakBox: @unchecked Sendable {
        weak var value: VirglRenderer?
        init(_ v: VirglRenderer) { value = v }
    }

    private func startPollThread(_ body: @escaping @Sendable () -> Void) {
        startThread(name: "virgl-fences", body)
    }
}

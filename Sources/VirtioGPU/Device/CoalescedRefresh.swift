import VhostUser
import SystemSupport

/// Runs a display refresh off the connection thread, one at a time: requests that arrive
/// while one runs are coalesced into one more run. A flood of GPU_SET_SOCKET therefore costs
/// at most one thread, never one each (enough threads and thread creation fails).
final class CoalescedRefresh: Sendable {
    private struct State { var running = false; var pending = false; var started = 0 }
    private let state = Mutex(State())
    private let body: @Sendable () -> Void

    init(_ body: @escaping @Sendable () -> Void) { self.body = body }

    /// Threads started so far (tests: a flood must not start one per request).
    var threadsStarted: Int { state.withLock { $0.started } }

    func request() {
        let start = state.withLock { s -> Bool in
            if s.running { s.pending = true; return false }
            s.running = true
            s.started += 1
            return true
        }
        guard start else { return }
        startThread(name: "vgpu-refresh") { [self] in
            while true {
                body()
                let again = state.withLock { s -> Bool in
                    guard s.pending else { s.running = false; return false }
                    s.pending = false
                    return true
                }
                if !again { return }
            }
        }
    }
}

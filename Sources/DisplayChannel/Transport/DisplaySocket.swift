// The display socket as a bounded, non-blocking transport: one sender (`send`) that writes an
// iovec list completely or reports why not, one bounded read step (`receive`), and the channel
// state both need (interrupted, broken, closed).
//
// QEMU reads this socket from its main loop, and reads nothing here while it waits for a
// vhost-user reply from this backend; it also stops reading while a GL display is blocked.
// So nothing here waits without a bound: every wait polls with a deadline and the wake channel.
// A message cut off in the middle leaves the stream out of sync: the channel is then broken for
// good (shut down, so that QEMU's blocking read of the rest of that message ends with EOF
// instead of hanging its main loop).

#if canImport(Glibc)
import Glibc
#endif
import CShims
import Logging
import Synchronization
import SystemPackage
import SystemSupport

final class DisplaySocket: Sendable {
    let fd: Int32
    /// An eventfd that wakes every wait at once (`interrupt()`, `beginClose()`).
    let wake: OwnedFileDescriptor
    let logger: Logger
    /// The most iovecs one sendmsg takes.
    let iovMax: Int

    private let interrupted = Atomic<Bool>(false)
    private let broken = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)

    /// Takes ownership of `fd` (closed by `closeDescriptor()`) and `wake`.
    init(fd: Int32, wake: OwnedFileDescriptor, logger: Logger) {
        self.fd = fd
        self.wake = wake
        self.logger = logger
        self.iovMax = max(16, Int(sysconf(Int32(_SC_IOV_MAX))))
    }

    // MARK: state

    /// True once the channel is unusable (peer gone, stream out of sync, garbage received, or
    /// closed). Permanent.
    var isBroken: Bool { broken.load(ordering: .acquiring) || closed.load(ordering: .acquiring) }

    var isInterrupted: Bool { interrupted.load(ordering: .acquiring) }

    /// Makes every current and future wait return at once until `resume()`. Never blocks.
    func interrupt() {
        interrupted.store(true, ordering: .releasing)
        EventFD.signal(wake.rawValue)
    }

    /// Re-arms waiting after `interrupt()`. Does not repair a broken channel.
    func resume() {
        guard !closed.load(ordering: .acquiring) else { return }
        interrupted.store(false, ordering: .releasing)
        EventFD.drain(wake.rawValue)
    }

    /// First half of closing: marks the channel closed, interrupts every wait and shuts the
    /// socket down. False if it was closed already. The owner then takes its locks (so no send
    /// or read is using the fd) and calls `closeDescriptor()`.
    func beginClose() -> Bool {
        guard closed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return false
        }
        interrupted.store(true, ordering: .releasing)
        EventFD.signal(wake.rawValue)
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
        return true
    }

    func closeDescriptor() { _ = Glibc.close(fd) }

    /// Marks the channel broken (logged once) and shuts the socket down so QEMU sees EOF.
    /// `peerClosed`: QEMU went away (its normal shutdown), which is logged as info, not an error.
    func markBroken(_ reason: String, peerClosed: Bool = false) {
        guard broken.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return
        }
        logger.log(level: peerClosed ? .info : .error, "display channel broken: \(reason); no more display updates")
        // Safety: callers hold the owner's send or receive lock, so the fd is not closed yet.
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    // MARK: sending

    private enum SendStatus {
        case done
        case interrupted
        case timedOut
        case failed(Errno)
    }

    /// Sends `iov[0..<count]` as (part of) one message `request` and handles the outcome: a
    /// message not started is dropped (logged); one cut off in the middle breaks the channel.
    /// `started` carries over between the batches of one message. `timeout`: how long the send
    /// may make no progress. `fd` (if >= 0) goes with the first bytes as SCM_RIGHTS.
    func send(_ iov: UnsafeMutablePointer<iovec>, _ count: Int, fd: Int32 = -1, _ request: DisplayRequest,
              timeout: Duration, started: inout Bool) -> Bool {
        switch sendAll(iov, count, fd: fd, timeout: timeout, started: &started) {
        case .done:
            return true
        case .interrupted:
            if started {
                markBroken("interrupted in the middle of \(request.name)")
            } else {
                logger.debug("\(request.name) dropped: display waits are interrupted")
            }
        case .timedOut:
            if started {
                markBroken("QEMU stopped reading in the middle of \(request.name) for \(timeout)")
            } else {
                logger.warning("\(request.name) dropped: QEMU has not read the display socket for \(timeout)")
            }
        case .failed(let e):
            if e == .brokenPipe || e == .connectionReset || e == .socketNotConnected {
                markBroken("QEMU closed the display socket (\(request.name): \(e))", peerClosed: true)
            } else {
                markBroken("\(request.name): send failed: \(e)")
            }
        }
        return false
    }

    /// Writes all of `iov[0..<count]`, advancing the entries over partial writes. Waits for
    /// POLLOUT at most `timeout` without progress. `fd` (if >= 0) goes with the first bytes.
    private func sendAll(_ iov: UnsafeMutablePointer<iovec>, _ count: Int, fd: Int32, timeout: Duration,
                         started: inout Bool) -> SendStatus {
        if !started && isInterrupted { return .interrupted }
        var index = 0
        var fdPending = fd >= 0
        var fdValue = fd
        var lastProgress = ContinuousClock.now
        while true {
            while index < count && iov[index].iov_len == 0 { index += 1 }
            if index == count { return .done }
            let batch = Int32(min(count - index, iovMax))
            // Safety: iov[index..<index+batch] are valid entries; vgpu_sendmsg_fds uses
            // MSG_NOSIGNAL (no SIGPIPE) and retries EINTR; the socket is non-blocking.
            let n = fdPending
                ? vgpu_sendmsg_fds(self.fd, iov + index, batch, &fdValue, 1)
                : vgpu_sendmsg_fds(self.fd, iov + index, batch, nil, 0)
            if n > 0 {
                started = true
                fdPending = false
                var left = n
                while left > 0 {
                    let len = iov[index].iov_len
                    if left >= len {
                        left -= len
                        iov[index].iov_len = 0
                        index += 1
                    } else {
                        iov[index].iov_base = iov[index].iov_base! + left
                        iov[index].iov_len = len - left
                        left = 0
                    }
                }
                lastProgress = ContinuousClock.now
                continue
            }
            let e = n == 0 ? Errno.ioError : currentErrno()
            switch e {
            case .resourceTemporarilyUnavailable:
                if isInterrupted { return .interrupted }
                switch waitFor(self.fd, events: Int16(POLLOUT), deadline: lastProgress + timeout) {
                case .ready: continue
                case .timedOut: return .timedOut
                case .interrupted: return .interrupted
                }
            case .interrupted:
                continue
            default:
                return .failed(e)
            }
        }
    }

    // MARK: receiving

    enum ReceiveStep {
        /// This many bytes were read into the buffer.
        case bytes(Int)
        /// Nothing read yet, but worth trying again (readable now, or EINTR).
        case again
        /// Nothing readable before the deadline (at once without a deadline).
        case timedOut
        case interrupted
        /// EOF or a read error: the channel is now broken.
        case broken
    }

    /// One non-blocking read into `buffer`; when nothing is there, waits for POLLIN until
    /// `deadline` (nil: no wait).
    func receive(into buffer: UnsafeMutableRawPointer, capacity: Int, deadline: ContinuousClock.Instant?) -> ReceiveStep {
        let n = Glibc.recv(fd, buffer, capacity, Int32(MSG_DONTWAIT))
        if n > 0 { return .bytes(n) }
        if n == 0 {
            markBroken("QEMU closed the display socket")
            return .broken
        }
        let e = currentErrno()
        switch e {
        case .resourceTemporarilyUnavailable:
            guard let deadline else { return .timedOut }
            if isInterrupted { return .interrupted }
            switch waitFor(fd, events: Int16(POLLIN), deadline: deadline) {
            case .ready: return .again
            case .timedOut: return .timedOut
            case .interrupted: return .interrupted
            }
        case .interrupted:
            return .again
        default:
            markBroken("reading the display socket failed: \(e)")
            return .broken
        }
    }

    // MARK: waiting

    private enum WaitOutcome {
        /// The fd has the events (or an error/hangup the next syscall reports).
        case ready
        case timedOut
        /// `wake` was signalled.
        case interrupted
    }

    /// Waits until `fd` has `events`, `wake` is signalled, or `deadline` passes (nil: no deadline).
    private func waitFor(_ fd: Int32, events: Int16, deadline: ContinuousClock.Instant?) -> WaitOutcome {
        let until = deadline.map { monotonicSeconds() + ($0 - ContinuousClock.now).inSeconds }
        while true {
            if let until, monotonicSeconds() >= until { return .timedOut }
            guard let revents = try? Poll.wait([(fd, events), (wake.rawValue, Int16(POLLIN))], until: until) else {
                return .ready   // the caller's syscall reports the error
            }
            if revents[1] != 0 { return .interrupted }
            if revents[0] != 0 { return .ready }
        }
    }
}

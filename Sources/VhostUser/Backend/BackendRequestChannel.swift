import struct Synchronization.Atomic
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The backend channel (SET_BACKEND_REQ_FD): a socket on which the backend sends requests to the
/// frontend (BACKEND_SHARED_OBJECT_ADD, ...). Sends are serialized; with REPLY_ACK negotiated a
/// send may wait for the frontend's u64 ack, but only for a bounded time and interruptibly.
///
/// QEMU reads this socket from its main loop, which does not run while QEMU waits for a reply on
/// the vhost-user socket: never wait for an ack on the connection thread (`waitForAck: false`).
/// After a wait times out or is interrupted the channel is out of step (a late ack would be taken
/// for the next one), so it is marked broken and later sends are dropped.
public final class BackendRequestChannel: Sendable {
    public enum Outcome: Equatable, Sendable {
        /// Sent; acked with 0 (or no ack was asked for).
        case ok
        /// The frontend acked with this non-zero status.
        case refused(UInt64)
        /// No ack within the time limit or the wait was interrupted: the channel is now broken.
        case noAck
        /// Not sent: the channel is closed, broken or the write failed.
        case notSent
    }

    private let socket: OwnedFileDescriptor
    private let wake: OwnedFileDescriptor
    /// Whether REPLY_ACK was negotiated (acks can be asked for).
    public let replyAck: Bool
    public let ackTimeout: Double
    /// Serializes sends (and the ack read that belongs to each).
    private let sendLock = Mutex<Void>(())
    private let broken = Atomic<Bool>(false)

    public init(socket: OwnedFileDescriptor, replyAck: Bool, ackTimeout: Double = 1.0) throws(Errno) {
        self.socket = socket
        self.replyAck = replyAck
        self.ackTimeout = ackTimeout
        self.wake = try EventFD.make()
    }

    public var isBroken: Bool { broken.load(ordering: .acquiring) }

    /// Sends one request. With `waitForAck` (and REPLY_ACK) the NEED_REPLY flag is set and the
    /// frontend's u64 is awaited for at most `ackTimeout` seconds.
    @discardableResult
    public func send(_ request: VhostUserBackendRequest, payload: [UInt8], waitForAck: Bool) -> Outcome {
        switch exchange(request, payload: payload, needReply: waitForAck && replyAck) {
        case .notSent: return .notSent
        case .sent: return .ok
        case .noReply: return .noAck
        case let .reply(status, _):
            return status == 0 ? .ok : .refused(status)
        }
    }

    /// What SHARED_OBJECT_LOOKUP found.
    public enum LookupOutcome: Sendable {
        /// The frontend answered 0 with an fd.
        case found(OwnedFileDescriptor)
        /// The frontend answered without an fd (QEMU 10 answers 0 with no fd for unknown UUIDs),
        /// or with this non-zero status.
        case notFound(status: UInt64)
        /// No answer in time, or the channel is broken: nothing is known.
        case noAnswer
    }

    /// BACKEND_SHARED_OBJECT_LOOKUP: asks the frontend for the fd of a UUID this process does not
    /// own. The reply is awaited (bounded, interruptible) whatever REPLY_ACK says: it carries
    /// the answer. Never call this on the connection thread.
    public func lookup(uuid: [UInt8]) -> LookupOutcome {
        guard case .reply(let status, var fds) = exchange(.sharedObjectLookup, payload: uuid, needReply: true) else { return .noAnswer }
        if status == 0, !fds.isEmpty { return .found(fds.removeFirst()) }
        return .notFound(status: status)
    }

    private enum Exchange {
        case notSent, sent, noReply
        /// The frontend's u64 status and the fds that came with it.
        case reply(status: UInt64, fds: [OwnedFileDescriptor])
    }

    /// One request and, with `needReply`, its reply, under the send lock. A failed write or a
    /// reply that does not come breaks the channel (a late reply would be taken for the next).
    private func exchange(_ request: VhostUserBackendRequest, payload: [UInt8], needReply: Bool) -> Exchange {
        sendLock.withLock { _ -> Exchange in
            guard !broken.load(ordering: .acquiring) else { return .notSent }
            let flags = VhostUserHeaderFlags.version | (needReply ? VhostUserHeaderFlags.needReply : 0)
            EventFD.drain(wake.rawValue)   // an interrupt meant for an earlier wait
            do {
                try VhostUserMessage.write(to: socket.rawValue, request: request.rawValue, flags: flags, payload: payload)
            } catch {
                broken.store(true, ordering: .releasing)
                return .notSent
            }
            guard needReply else { return .sent }
            guard let m = awaitReply(request), let status = U64Payload(decoding: m.payload) else {
                broken.store(true, ordering: .releasing)
                return .noReply
            }
            return .reply(status: status.value, fds: m.fds)
        }
    }

    /// The frontend's reply to `request` (REPLY flag, u64 payload), or nil on timeout, interrupt,
    /// EOF or a message that is not that reply.
    /// Every byte of the reply, header and payload, comes under the same deadline and interrupt:
    /// a peer that sends half a message cannot hold the send lock (issue 11 §3.4).
    private func awaitReply(_ request: VhostUserBackendRequest) -> VhostUserMessage? {
        let deadline = monotonicSeconds() + ackTimeout
        let m: VhostUserMessage?
        do { m = try VhostUserMessage.read(from: socket.rawValue, until: deadline, wake: wake.rawValue) } catch {
            if error == .canceled { EventFD.drain(wake.rawValue) }
            return nil
        }
        guard let m, m.header.request == request.rawValue, m.header.flags & VhostUserHeaderFlags.reply != 0, m.payload.count == U64Payload.size
        else { return nil }
        return m
    }

    /// Ends a wait in progress (queues are being stopped and QEMU waits on the connection).
    public func interrupt() { EventFD.signal(wake.rawValue) }

    /// Stops all use: later sends are dropped, a wait in progress ends.
    public func close() {
        broken.store(true, ordering: .releasing)
        interrupt()
        _ = shutdown(socket.rawValue, Int32(SHUT_RDWR))
    }

}

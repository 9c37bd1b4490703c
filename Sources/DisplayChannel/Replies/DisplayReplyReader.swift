// The display sink's request/reply exchanges: sending a request that QEMU answers, then
// reading the socket (bounded, interruptible) and handing each decoded reply to the reply
// queue until ours has come. One reader at a time: all of it runs under the `receiver` lock.

import Logging

/// The receive side's state, under `VhostUserGPUDisplay.receiver`.
// @unchecked: only ever touched under its Mutex; `buffer` is owned scratch memory.
struct DisplayReceiveState: @unchecked Sendable {
    static let bufferSize = 4096

    var open = true
    var decoder = DisplayMessageDecoder(maxPayloadSize: 4096)
    var replies = DisplayReplyQueue()
    /// Reused per read: messages decoded from one recv, dispatched after the decoder returns.
    var messages: [DisplayMessage] = []
    let buffer: UnsafeMutableRawPointer

    init() {
        buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferSize, alignment: 8)
        messages.reserveCapacity(8)
    }
}

/// How a request/reply exchange ended.
enum DisplayExchangeResult {
    case reply(DisplayMessage)
    /// The request never left: interrupted, QEMU not reading, or the channel broke.
    case notSent
    /// QEMU answered a later request instead (GET_EDID beyond max_outputs).
    case unanswered
    case timedOut
    case interrupted
    case broken

    var message: DisplayMessage? {
        if case .reply(let m) = self { return m }
        return nil
    }
}

enum DisplayPumpOutcome { case satisfied, timedOut, interrupted, broken }

extension VhostUserGPUDisplay {
    /// Sends `request` and waits (bounded) for its reply.
    func exchange<P: DisplayWireEncodable>(_ request: DisplayRequest, _ payload: P) -> DisplayExchangeResult {
        receiver.withLock { state in
            exchangeLocked(&state, request, payload, ping: false, deadline: ContinuousClock.now + options.timeout)
        }
    }

    /// With `receiver` held: sends `request` (and with `ping`, a GET_PROTOCOL_FEATURES behind it
    /// whose reply proves QEMU skipped the request), records the owed replies, waits for ours.
    /// `sendTimeout`: bound on the send's lack of progress (default `Options.timeout`).
    func exchangeLocked<P: DisplayWireEncodable>(_ state: inout DisplayReceiveState, _ request: DisplayRequest, _ payload: P,
                                                 ping: Bool, deadline: ContinuousClock.Instant,
                                                 sendTimeout: Duration? = nil) -> DisplayExchangeResult {
        guard state.open, !isBroken else { return .broken }
        guard sendMessage(request, payload, timeout: sendTimeout) else { return .notSent }
        let token = state.replies.oweWaiter(request)
        if ping, sendMessage(.getProtocolFeatures, DisplayNoPayload()) {
            state.replies.owe(.getProtocolFeatures, role: .discard)
        }
        let outcome = pump(&state, deadline: deadline) { $0.replies.hasResult(token) }
        if let result = state.replies.takeResult(token) {
            switch result {
            case .message(let m): return .reply(m)
            case .dropped: return .unanswered
            }
        }
        state.replies.abandon(token)
        switch outcome {
        case .timedOut:
            logger.warning("no \(request.name) reply from QEMU in time")
            return .timedOut
        case .interrupted:
            logger.debug("\(request.name) reply wait interrupted")
            return .interrupted
        case .satisfied, .broken:
            return .broken
        }
    }

    /// Reads and dispatches replies until `done` holds, the deadline passes (nil: only what is
    /// already readable), an interrupt, or a broken channel.
    func pump(_ state: inout DisplayReceiveState, deadline: ContinuousClock.Instant?,
              until done: (DisplayReceiveState) -> Bool) -> DisplayPumpOutcome {
        while true {
            if done(state) { return .satisfied }
            guard state.open, !isBroken else { return .broken }
            switch socket.receive(into: state.buffer, capacity: DisplayReceiveState.bufferSize, deadline: deadline) {
            case .bytes(let n):
                // Taken out of the state so the decoder (also in the state) can fill it; its
                // capacity is kept across reads.
                var messages = state.messages
                state.messages = []
                messages.removeAll(keepingCapacity: true)
                do {
                    try state.decoder.feed(UnsafeRawBufferPointer(start: state.buffer, count: n)) { messages.append($0) }
                } catch {
                    socket.markBroken("garbage on the display socket: \(error)")
                    return .broken
                }
                for m in messages { dispatchReply(&state, m) }
                messages.removeAll(keepingCapacity: true)
                state.messages = messages
            case .again: continue
            case .timedOut: return .timedOut
            case .interrupted: return .interrupted
            case .broken: return .broken
            }
        }
    }

    /// Hands one message from QEMU to the reply queue and acts on what it meant.
    private func dispatchReply(_ state: inout DisplayReceiveState, _ message: DisplayMessage) {
        guard !isBroken else { return }
        let (match, unansweredEDIDs) = state.replies.match(message)
        for _ in 0..<unansweredEDIDs {
            logger.warning("QEMU did not answer GET_EDID (scanout beyond its max_outputs?)")
        }
        switch match {
        case .delivered: break
        case .dropped(let request): logger.debug("late \(request.name) reply dropped")
        case .negotiation(let reply): applyNegotiation(reply)
        case .broken(let reason): socket.markBroken(reason)
        }
    }
}

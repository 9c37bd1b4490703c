// The backend's side of the vhost-user-gpu display socket (QEMU docs/interop/vhost-user-gpu.rst).
//
// QEMU reads this socket from its main loop, and reads nothing here while it waits for a
// vhost-user reply from this backend; it also stops reading while a GL display is blocked.
// So nothing in this file waits without a bound: every send and every reply wait polls with a
// timeout and an interrupt channel. A message cut off in the middle leaves the stream out of
// sync: the channel is then broken for good (shut down, so that QEMU's blocking read of the
// rest of that message ends with EOF instead of hanging its main loop).

#if canImport(Glibc)
import Glibc
#endif
import CShims
import Logging
import Synchronization
import SystemPackage
import SystemSupport

/// A `DisplaySink` that talks to QEMU over the vhost-user-gpu display socket.
///
/// Threads: any thread may call any method; sends are serialised, so messages never interleave.
/// Calls that wait for QEMU (the first protocol feature exchange, `displayInfo()`, `edid(scanout:)`)
/// wait at most `Options.timeout`, `updateDMABUF(_:rect:)` at most `Options.dmabufUpdateTimeout`,
/// and all return early on `interrupt()`. Sends wait at most `Options.timeout` without progress.
/// Once broken or closed, every call is a no-op returning nil/false/a failure.
public final class VhostUserGPUDisplay: DisplaySink {
    /// Tunables.
    public struct Options: Sendable {
        /// How long a send may make no progress, and how long a reply may take, before giving up.
        public var timeout: Duration
        /// How long `updateDMABUF` waits for QEMU's "flushed" reply. Short, because it is on the
        /// frame path: a GL display normally flushes within a frame or two.
        public var dmabufUpdateTimeout: Duration
        /// Protocol features this side implements and will enable if QEMU offers them (QEMU 10
        /// offers both). Without `.dmabuf2` dmabufs go out as DMABUF_SCANOUT, linear only.
        public var supportedFeatures: DisplayProtocolFeatures

        public init(timeout: Duration = .seconds(5), dmabufUpdateTimeout: Duration = .seconds(1),
                    supportedFeatures: DisplayProtocolFeatures = [.edid, .dmabuf2]) {
            self.timeout = timeout
            self.dmabufUpdateTimeout = dmabufUpdateTimeout
            self.supportedFeatures = supportedFeatures
        }
    }

    /// `VIRTIO_GPU_MAX_SCANOUTS`: scanout ids at or above this are never sent.
    public static let maxScanouts = 16

    private static let negotiatedBit: UInt64 = 1 << 63
    private static let scratchSize = 128
    private static let receiveBufferSize = 4096

    private let socket: Int32
    private let wake: WakeChannel
    private let options: Options
    private let logger: Logger
    private let iovMax: Int

    private let interrupted = Atomic<Bool>(false)
    private let broken = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    /// 0 until negotiated; then `negotiatedBit | features`.
    private let negotiated = Atomic<UInt64>(0)
    /// Bit n: QEMU holds a dmabuf for scanout n (the last DMABUF_SCANOUT(2) sent carried an fd).
    /// Written under `sender`; read lock-free so `updateDMABUF` never queues behind a big UPDATE.
    private let dmabufScanouts = Atomic<UInt32>(0)

    /// Send side: one message at a time. Lock order: `receiver` before `sender`.
    private let sender: Mutex<SendState>
    /// Reply side: one waiter at a time, and the queue of replies QEMU owes, in request order.
    private let receiver: Mutex<ReceiveState>

    // @unchecked: only ever touched under its Mutex; the raw pointers are owned scratch memory.
    private struct SendState: @unchecked Sendable {
        var open = true
        /// Reused iovec scratch array (`iovMax` entries).
        let iov: UnsafeMutablePointer<iovec>
        /// Reused bytes for headers and small payloads.
        let scratch: UnsafeMutableRawPointer
        /// Scanouts that QEMU has a surface for (a SCANOUT with a size was sent). QEMU 10
        /// dereferences that surface on UPDATE without checking it exists.
        var hasSurface = [Bool](repeating: false, count: VhostUserGPUDisplay.maxScanouts)
        /// Last cursor position sent per scanout: CURSOR_POS_HIDE repeats it, as QEMU's C
        /// backend does (QEMU moves the hidden cursor there).
        var cursorPosition = [(x: UInt32, y: UInt32)](repeating: (0, 0), count: VhostUserGPUDisplay.maxScanouts)
    }

    private enum Role { case negotiation, waiter, discard }

    private struct Pending {
        var request: DisplayRequest
        var token: UInt64
        var role: Role
    }

    private enum ReplyResult {
        case message(DisplayMessage)
        /// QEMU answered a later request first: it never answers this one (GET_EDID for a
        /// scanout id >= max_outputs).
        case dropped
    }

    // @unchecked: only ever touched under its Mutex; `buffer` is owned scratch memory.
    private struct ReceiveState: @unchecked Sendable {
        var open = true
        var decoder = DisplayMessageDecoder(maxPayloadSize: 4096)
        /// Replies QEMU owes, oldest first (QEMU answers in request order).
        var pending: [Pending] = []
        var results: [UInt64: ReplyResult] = [:]
        var nextToken: UInt64 = 1
        /// Reused per read: messages decoded from one recv, dispatched after the decoder returns.
        var messages: [DisplayMessage] = []
        let buffer: UnsafeMutableRawPointer
    }

    private enum SendStatus {
        case done
        case interrupted
        case timedOut
        case failed(Errno)
    }

    private enum PumpOutcome { case satisfied, timedOut, interrupted, broken }

    /// How a request/reply exchange ended.
    private enum ExchangeResult {
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

    /// Takes ownership of `socket` (the fd from `VHOST_USER_GPU_SET_SOCKET`), makes it
    /// non-blocking and sends GET_PROTOCOL_FEATURES without waiting for the reply (the caller is
    /// the vhost-user thread, and QEMU answers only after it has the vhost-user reply). The reply
    /// is read by the first call that needs it. On a thrown error `socket` has been closed.
    public init(socket: FileDescriptor, options: Options = Options(),
                logger: Logger = Logger(label: "vgpu.display")) throws(Errno) {
        do throws(Errno) {
            try setNonBlocking(socket.rawValue)
            self.wake = try WakeChannel.make()
        } catch {
            try? socket.close()
            throw error
        }
        self.socket = socket.rawValue
        self.options = options
        self.logger = logger
        let iovMax = max(16, Int(sysconf(Int32(_SC_IOV_MAX))))
        self.iovMax = iovMax
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: iovMax)
        iov.initialize(repeating: iovec(), count: iovMax)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.scratchSize, alignment: 8)
        self.sender = Mutex(SendState(iov: iov, scratch: scratch))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.receiveBufferSize, alignment: 8)
        var receiveState = ReceiveState(buffer: buffer)
        receiveState.messages.reserveCapacity(8)
        receiveState.pending.reserveCapacity(8)
        self.receiver = Mutex(receiveState)

        receiver.withLock { state in
            if sendSimple(.getProtocolFeatures, payloadSize: 0, fill: { _ in }) {
                state.pending.append(Pending(request: .getProtocolFeatures, token: 0, role: .negotiation))
            }
        }
    }

    deinit {
        close()
        wake.close()
        sender.withLock { state in
            state.iov.deallocate()
            state.scratch.deallocate()
        }
        receiver.withLock { state in state.buffer.deallocate() }
    }

    // MARK: state

    /// True once the channel is unusable (peer gone, stream out of sync, garbage received, or
    /// closed). Permanent.
    public var isBroken: Bool { broken.load(ordering: .acquiring) || closed.load(ordering: .acquiring) }

    /// The features both sides enabled, or nil while QEMU's GET_PROTOCOL_FEATURES reply has not
    /// been read yet.
    public var protocolFeatures: DisplayProtocolFeatures? {
        let v = negotiated.load(ordering: .acquiring)
        return v == 0 ? nil : DisplayProtocolFeatures(rawValue: v & ~Self.negotiatedBit)
    }

    /// Makes every current and future wait return at once (sends not yet started are dropped,
    /// a send cut off mid-message breaks the channel, reply waits return nil) until `resume()`.
    /// The vhost-user thread calls this before stopping queue workers. Never blocks.
    public func interrupt() {
        interrupted.store(true, ordering: .releasing)
        wake.signal()
    }

    /// Re-arms waiting after `interrupt()`. Does not repair a broken channel.
    public func resume() {
        guard !closed.load(ordering: .acquiring) else { return }
        interrupted.store(false, ordering: .releasing)
        wake.drain()
    }

    /// Closes the socket. Interrupts other threads' waits first, then waits for them to leave.
    public func close() {
        guard closed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return
        }
        interrupted.store(true, ordering: .releasing)
        wake.signal()
        _ = Glibc.shutdown(socket, Int32(SHUT_RDWR))
        receiver.withLock { rstate in
            sender.withLock { sstate in
                sstate.open = false
                _ = Glibc.close(socket)
            }
            rstate.open = false
        }
    }

    private var isUsable: Bool { !isBroken }

    /// Marks the channel broken (logged once) and shuts the socket down so QEMU sees EOF.
    /// `peerClosed`: QEMU went away (its normal shutdown), which is logged as info, not an error.
    private func markBroken(_ reason: String, peerClosed: Bool = false) {
        guard broken.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return
        }
        logger.log(level: peerClosed ? .info : .error, "display channel broken: \(reason); no more display updates")
        // Safety: callers hold `sender` or `receiver`, so `close()` has not closed the fd yet.
        _ = Glibc.shutdown(socket, Int32(SHUT_RDWR))
    }

    // MARK: DisplaySink

    /// GET_DISPLAY_INFO: QEMU's 16 `virtio_gpu_display_one` entries (disabled ones zero), or nil
    /// on timeout, interrupt, a broken channel or a non-OK reply.
    public func displayInfo() -> [DisplayMode]? {
        guard isUsable else { return nil }
        guard let reply = exchange(.getDisplayInfo, payloadSize: 0, fill: { _ in }).message else { return nil }
        guard let info = try? DisplayInfoReply(decoding: reply.payload) else { return nil }
        guard info.type == DisplayCtrlHeader.okDisplayInfo else {
            logger.warning("GET_DISPLAY_INFO reply has type 0x\(String(info.type, radix: 16))")
            return nil
        }
        return info.modes
    }

    /// GET_EDID, only if EDID was negotiated: the first `size` bytes of QEMU's reply (QEMU 10
    /// sends all 1024), or nil. Waits for the protocol feature reply if it has not come yet.
    /// QEMU never answers an id >= its max_outputs; a GET_PROTOCOL_FEATURES sent right behind
    /// GET_EDID detects that at once instead of waiting out the timeout.
    public func edid(scanout: UInt32) -> [UInt8]? {
        guard isUsable, scanout < UInt32(Self.maxScanouts) else { return nil }
        let reply: DisplayMessage? = receiver.withLock { state in
            let deadline = ContinuousClock.now + options.timeout
            guard let features = negotiate(&state, deadline: deadline), features.contains(.edid) else { return nil }
            return exchangeLocked(&state, .getEDID, payloadSize: DisplayEDIDRequest.byteCount, ping: true,
                                  deadline: deadline, fill: { $0.storeBytes(of: scanout, as: UInt32.self) }).message
        }
        guard let reply, let resp = try? DisplayEDIDReply(decoding: reply.payload) else { return nil }
        guard resp.type == DisplayCtrlHeader.okEDID, let blob = resp.blob else {
            logger.warning("GET_EDID reply has type 0x\(String(resp.type, radix: 16)), size \(resp.size)")
            return nil
        }
        return blob
    }

    /// SCANOUT: scanout `id` shows a `width`×`height` surface; a zero dimension sends 0x0
    /// (disable). Ids >= 16 are dropped.
    public func setScanout(_ id: UInt32, width: UInt32, height: UInt32) {
        guard isUsable else { return }
        guard id < UInt32(Self.maxScanouts) else {
            logger.warning("SCANOUT for scanout \(id) dropped: id out of range")
            return
        }
        pollNegotiation()
        let enable = width != 0 && height != 0
        let payload = DisplayScanout(scanoutID: id, width: enable ? width : 0, height: enable ? height : 0)
        sender.withLock { state in
            guard state.open, isUsable else { return }
            DisplayMessageHeader(.scanout, size: UInt32(DisplayScanout.byteCount)).store(to: state.scratch)
            payload.store(to: state.scratch + DisplayMessageHeader.byteCount)
            state.iov[0] = iovec(iov_base: state.scratch, iov_len: DisplayMessageHeader.byteCount + DisplayScanout.byteCount)
            if transmit(state.iov, 1, fd: -1, .scanout) {
                state.hasSurface[Int(id)] = enable
            }
        }
    }

    /// UPDATE: one message, sent straight from `pixels` (no copy): a single iovec when rows are
    /// packed, else one per row in batches of at most IOV_MAX, all under the send lock.
    /// Dropped when the scanout has no surface (QEMU would crash), the rect is empty, or the
    /// payload would not fit the u32 size field.
    public func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int) {
        guard isUsable, rect.width > 0, rect.height > 0 else { return }
        let header = DisplayUpdateHeader(scanoutID: id, rect: rect)
        guard let size = header.updatePayloadSize else {
            logger.warning("UPDATE \(rect) dropped: too large for one message")
            return
        }
        let rowBytes = Int(rect.width) * 4
        let rows = Int(rect.height)
        guard stride >= rowBytes else {
            logger.error("UPDATE \(rect) dropped: stride \(stride) < \(rowBytes)")
            return
        }
        guard id < UInt32(Self.maxScanouts) else { return }
        pollNegotiation()
        sender.withLock { state in
            guard state.open, isUsable else { return }
            guard state.hasSurface[Int(id)] else {
                logger.debug("UPDATE for scanout \(id) dropped: no SCANOUT surface")
                return
            }
            let headBytes = DisplayMessageHeader.byteCount + DisplayUpdateHeader.byteCount
            DisplayMessageHeader(.update, size: size).store(to: state.scratch)
            header.store(to: state.scratch + DisplayMessageHeader.byteCount)
            let iov = state.iov
            iov[0] = iovec(iov_base: state.scratch, iov_len: headBytes)
            // Safety: the caller guarantees `rows` rows of `rowBytes` at `stride` apart; the
            // kernel only reads through these iovecs.
            let base = UnsafeMutableRawPointer(mutating: pixels)
            var started = false
            if stride == rowBytes || rows == 1 {
                iov[1] = iovec(iov_base: base, iov_len: rowBytes * rows)
                _ = transmit(iov, 2, fd: -1, .update, started: &started)
                return
            }
            var row = 0
            var first = true
            while row < rows {
                var n = first ? 1 : 0
                while n < iovMax && row < rows {
                    iov[n] = iovec(iov_base: base + row * stride, iov_len: rowBytes)
                    n += 1
                    row += 1
                }
                first = false
                guard transmit(iov, n, fd: -1, .update, started: &started) else { return }
            }
        }
    }

    /// CURSOR_UPDATE with the 64×64 ARGB image at `pixels` (16 KiB), sent without a copy.
    public func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32,
                             pixels: UnsafeRawPointer) {
        guard isUsable else { return }
        pollNegotiation()
        sender.withLock { state in
            guard state.open, isUsable else { return }
            let p = state.scratch
            DisplayMessageHeader(.cursorUpdate, size: UInt32(DisplayCursorUpdate.byteCount)).store(to: p)
            DisplayCursorPos(scanoutID: id, x: x, y: y).store(to: p + 12)
            p.storeBytes(of: hotX, toByteOffset: 24, as: UInt32.self)
            p.storeBytes(of: hotY, toByteOffset: 28, as: UInt32.self)
            state.iov[0] = iovec(iov_base: p, iov_len: DisplayMessageHeader.byteCount + DisplayCursorUpdate.headerByteCount)
            // Safety: the caller guarantees 64*64*4 readable bytes; the kernel only reads them.
            state.iov[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: pixels), iov_len: DisplayCursorUpdate.pixelBytes)
            if transmit(state.iov, 2, fd: -1, .cursorUpdate), Int(id) < Self.maxScanouts {
                state.cursorPosition[Int(id)] = (x, y)
            }
        }
    }

    /// CURSOR_POS: shows the cursor at (x, y) on scanout `id`.
    public func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32) {
        sendCursorPos(.cursorPos, scanout: id, position: (x, y))
    }

    /// CURSOR_POS_HIDE: hides the cursor on scanout `id` (at its last position).
    public func cursorHide(scanout id: UInt32) {
        sendCursorPos(.cursorPosHide, scanout: id, position: nil)
    }

    private func sendCursorPos(_ request: DisplayRequest, scanout id: UInt32, position: (x: UInt32, y: UInt32)?) {
        guard isUsable else { return }
        pollNegotiation()
        sender.withLock { state in
            guard state.open, isUsable else { return }
            let slot = Int(id) < Self.maxScanouts ? Int(id) : nil
            let (x, y) = position ?? slot.map { state.cursorPosition[$0] } ?? (0, 0)
            DisplayMessageHeader(request, size: UInt32(DisplayCursorPos.byteCount)).store(to: state.scratch)
            DisplayCursorPos(scanoutID: id, x: x, y: y).store(to: state.scratch + DisplayMessageHeader.byteCount)
            state.iov[0] = iovec(iov_base: state.scratch, iov_len: DisplayMessageHeader.byteCount + DisplayCursorPos.byteCount)
            if transmit(state.iov, 1, fd: -1, request), let slot {
                state.cursorPosition[slot] = (x, y)
            }
        }
    }

    // MARK: dmabuf scanout

    /// DMABUF_SCANOUT2 (with the modifier) when DMABUF2 was negotiated, else DMABUF_SCANOUT
    /// (then only `DisplayDMABUF.linearModifier` is allowed), with a duplicate of `buffer.fd` as
    /// SCM_RIGHTS; the caller keeps its fd. nil sends DMABUF_SCANOUT without an fd: QEMU drops
    /// its dmabuf and disables the GL scanout. Waits (bounded by `Options.timeout`) for the
    /// protocol feature reply if it has not been read yet, so never call it from the vhost-user
    /// thread (QEMU answers nothing while it waits for that thread). Returns true if sent.
    ///
    /// QEMU 10 imports the buffer with the scanout's width and height but ignores `rect.x` and
    /// `rect.y` (it shows the buffer from its top-left corner); they are sent as given.
    public func scanoutDMABUF(_ id: UInt32, rect: PixelRect, buffer: DisplayDMABUF?) -> Bool {
        guard isUsable else { return false }
        guard id < UInt32(Self.maxScanouts) else {
            logger.warning("DMABUF_SCANOUT for scanout \(id) dropped: id out of range")
            return false
        }
        guard let buffer else {
            pollNegotiation()
            // QEMU reads only scanout_id when no fd comes with the message.
            let payload = DisplayDMABUFScanout(scanoutID: id, width: 0, height: 0, fdWidth: 0, fdHeight: 0,
                                               fdStride: 0, fourcc: 0)
            return sendDMABUFScanout(id, enable: false, .dmabufScanout, DisplayDMABUFScanout.byteCount, fd: -1) {
                payload.store(to: $0)
            }
        }
        guard buffer.fd.rawValue >= 0, rect.width > 0, rect.height > 0, buffer.stride > 0,
              UInt64(rect.x) + UInt64(rect.width) <= UInt64(buffer.width),
              UInt64(rect.y) + UInt64(rect.height) <= UInt64(buffer.height) else {
            logger.error("DMABUF_SCANOUT \(rect) of a \(buffer.width)x\(buffer.height) buffer (stride \(buffer.stride), fd \(buffer.fd.rawValue)) dropped: invalid layout")
            return false
        }
        var useScanout2 = false
        if options.supportedFeatures.contains(.dmabuf2) {
            let features = receiver.withLock { state in negotiate(&state, deadline: ContinuousClock.now + options.timeout) }
            useScanout2 = features?.contains(.dmabuf2) ?? false
        } else {
            pollNegotiation()
        }
        let payload = DisplayDMABUFScanout(scanoutID: id, rect: rect, buffer: buffer)
        if useScanout2 {
            let payload2 = DisplayDMABUFScanout2(scanout: payload, modifier: buffer.modifier)
            return sendDMABUFScanout(id, enable: true, .dmabufScanout2, DisplayDMABUFScanout2.byteCount,
                                     fd: buffer.fd.rawValue) { payload2.store(to: $0) }
        }
        guard buffer.modifier == DisplayDMABUF.linearModifier else {
            logger.error("DMABUF_SCANOUT with modifier 0x\(String(buffer.modifier, radix: 16)) dropped: DMABUF2 not negotiated")
            return false
        }
        return sendDMABUFScanout(id, enable: true, .dmabufScanout, DisplayDMABUFScanout.byteCount,
                                 fd: buffer.fd.rawValue) { payload.store(to: $0) }
    }

    /// Sends a DMABUF_SCANOUT(2) and records whether QEMU now holds a dmabuf for `id`.
    private func sendDMABUFScanout(_ id: UInt32, enable: Bool, _ request: DisplayRequest, _ payloadSize: Int,
                                   fd: Int32, fill: (UnsafeMutableRawPointer) -> Void) -> Bool {
        sender.withLock { state in
            guard state.open, isUsable else { return false }
            DisplayMessageHeader(request, size: UInt32(payloadSize)).store(to: state.scratch)
            fill(state.scratch + DisplayMessageHeader.byteCount)
            state.iov[0] = iovec(iov_base: state.scratch, iov_len: DisplayMessageHeader.byteCount + payloadSize)
            guard transmit(state.iov, 1, fd: fd, request) else { return false }
            let bit = UInt32(1) << id
            if enable {
                dmabufScanouts.bitwiseOr(bit, ordering: .releasing)
            } else {
                dmabufScanouts.bitwiseAnd(~bit, ordering: .releasing)
            }
            return true
        }
    }

    /// DMABUF_UPDATE for `rect` of scanout `id`'s dmabuf, then waits at most
    /// `Options.dmabufUpdateTimeout` (and returns early on `interrupt()`) for QEMU's empty
    /// reply, which it sends once its display has flushed the buffer, or at once when the
    /// console has no GL ("console doesn't support GL!") or the scanout is invalid. A late reply
    /// after `.timedOut` is read and dropped by a later wait; QEMU reads nothing else meanwhile.
    /// No allocation on this path.
    public func updateDMABUF(_ id: UInt32, rect: PixelRect) -> DMABUFUpdateResult {
        guard isUsable else { return .failed(.disconnected) }
        guard id < UInt32(Self.maxScanouts),
              dmabufScanouts.load(ordering: .acquiring) & (UInt32(1) << id) != 0 else {
            return .failed(.noScanout)
        }
        let header = DisplayUpdateHeader(scanoutID: id, rect: rect)
        let timeout = options.dmabufUpdateTimeout
        let result = receiver.withLock { state in
            exchangeLocked(&state, .dmabufUpdate, payloadSize: DisplayUpdateHeader.byteCount, ping: false,
                           deadline: ContinuousClock.now + timeout, sendTimeout: timeout,
                           fill: { header.store(to: $0) })
        }
        switch result {
        case .reply: return .flushed
        case .timedOut, .unanswered: return .timedOut
        case .interrupted: return .failed(.interrupted)
        case .broken: return .failed(.disconnected)
        case .notSent:
            if isBroken { return .failed(.disconnected) }
            return interrupted.load(ordering: .acquiring) ? .failed(.interrupted) : .timedOut
        }
    }

    // MARK: sending

    /// Sends one small message built in the scratch buffer (header + `payloadSize` bytes).
    /// `timeout`: how long the send may make no progress (default `Options.timeout`).
    private func sendSimple(_ request: DisplayRequest, fd: Int32 = -1, payloadSize: Int, timeout: Duration? = nil,
                            fill: (UnsafeMutableRawPointer) -> Void) -> Bool {
        precondition(DisplayMessageHeader.byteCount + payloadSize <= Self.scratchSize)
        return sender.withLock { state in
            guard state.open, isUsable else { return false }
            DisplayMessageHeader(request, size: UInt32(payloadSize)).store(to: state.scratch)
            fill(state.scratch + DisplayMessageHeader.byteCount)
            state.iov[0] = iovec(iov_base: state.scratch, iov_len: DisplayMessageHeader.byteCount + payloadSize)
            var started = false
            return transmit(state.iov, 1, fd: fd, request, timeout: timeout ?? options.timeout, started: &started)
        }
    }

    private func transmit(_ iov: UnsafeMutablePointer<iovec>, _ count: Int, fd: Int32, _ request: DisplayRequest) -> Bool {
        var started = false
        return transmit(iov, count, fd: fd, request, started: &started)
    }

    private func transmit(_ iov: UnsafeMutablePointer<iovec>, _ count: Int, fd: Int32,
                          _ request: DisplayRequest, started: inout Bool) -> Bool {
        transmit(iov, count, fd: fd, request, timeout: options.timeout, started: &started)
    }

    /// Sends `iov[0..<count]` as (part of) one message and handles the outcome: a message not
    /// started is dropped (logged); one cut off in the middle breaks the channel.
    private func transmit(_ iov: UnsafeMutablePointer<iovec>, _ count: Int, fd: Int32,
                          _ request: DisplayRequest, timeout: Duration, started: inout Bool) -> Bool {
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
        if !started && interrupted.load(ordering: .acquiring) { return .interrupted }
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
                ? vgpu_sendmsg_fds(socket, iov + index, batch, &fdValue, 1)
                : vgpu_sendmsg_fds(socket, iov + index, batch, nil, 0)
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
                if interrupted.load(ordering: .acquiring) { return .interrupted }
                switch waitFor(socket, events: Int16(POLLOUT), wake: wake.readFD, deadline: lastProgress + timeout) {
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

    // MARK: replies

    /// Sends `request` and waits (bounded) for its reply.
    private func exchange(_ request: DisplayRequest, payloadSize: Int,
                          fill: (UnsafeMutableRawPointer) -> Void) -> ExchangeResult {
        receiver.withLock { state in
            exchangeLocked(&state, request, payloadSize: payloadSize, ping: false,
                           deadline: ContinuousClock.now + options.timeout, fill: fill)
        }
    }

    /// With `receiver` held: sends `request` (and with `ping`, a GET_PROTOCOL_FEATURES behind it
    /// whose reply proves QEMU skipped the request), records the owed replies, waits for ours.
    /// `sendTimeout`: bound on the send's lack of progress (default `Options.timeout`).
    private func exchangeLocked(_ state: inout ReceiveState, _ request: DisplayRequest, payloadSize: Int,
                                ping: Bool, deadline: ContinuousClock.Instant, sendTimeout: Duration? = nil,
                                fill: (UnsafeMutableRawPointer) -> Void) -> ExchangeResult {
        guard state.open, isUsable else { return .broken }
        guard sendSimple(request, payloadSize: payloadSize, timeout: sendTimeout, fill: fill) else { return .notSent }
        let token = state.nextToken
        state.nextToken += 1
        state.pending.append(Pending(request: request, token: token, role: .waiter))
        if ping, sendSimple(.getProtocolFeatures, payloadSize: 0, fill: { _ in }) {
            state.pending.append(Pending(request: .getProtocolFeatures, token: 0, role: .discard))
        }
        let outcome = pump(&state, deadline: deadline) { $0.results[token] != nil }
        if let result = state.results.removeValue(forKey: token) {
            switch result {
            case .message(let m): return .reply(m)
            case .dropped: return .unanswered
            }
        }
        // Nobody waits any more; its reply, when it comes, is read and dropped.
        if let i = state.pending.firstIndex(where: { $0.token == token && $0.role == .waiter }) {
            state.pending[i].role = .discard
        }
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

    /// With `receiver` held: the negotiated features, reading QEMU's reply (bounded) if needed.
    private func negotiate(_ state: inout ReceiveState, deadline: ContinuousClock.Instant) -> DisplayProtocolFeatures? {
        if let f = protocolFeatures { return f }
        guard state.open, isUsable, state.pending.contains(where: { $0.role == .negotiation }) else { return nil }
        _ = pump(&state, deadline: deadline) { _ in self.negotiated.load(ordering: .acquiring) != 0 }
        return protocolFeatures
    }

    /// Reads whatever replies are already there, without waiting, if no one else is reading:
    /// finishes the feature exchange as early as possible without ever blocking the hot path.
    private func pollNegotiation() {
        guard negotiated.load(ordering: .relaxed) == 0 else { return }
        _ = receiver.withLockIfAvailable { state in
            guard state.open, state.pending.contains(where: { $0.role == .negotiation }) else { return }
            _ = pump(&state, deadline: nil) { _ in self.negotiated.load(ordering: .acquiring) != 0 }
        }
    }

    /// Reads and dispatches replies until `done` holds, the deadline passes (nil: only what is
    /// already readable), an interrupt, or a broken channel.
    private func pump(_ state: inout ReceiveState, deadline: ContinuousClock.Instant?,
                      until done: (ReceiveState) -> Bool) -> PumpOutcome {
        while true {
            if done(state) { return .satisfied }
            guard state.open, isUsable else { return .broken }
            let n = Glibc.recv(socket, state.buffer, Self.receiveBufferSize, Int32(MSG_DONTWAIT))
            if n > 0 {
                // Taken out of the state so the decoder (also in the state) can fill it; its
                // capacity is kept across reads.
                var messages = state.messages
                state.messages = []
                messages.removeAll(keepingCapacity: true)
                do {
                    try state.decoder.feed(UnsafeRawBufferPointer(start: state.buffer, count: n)) { messages.append($0) }
                } catch {
                    markBroken("garbage on the display socket: \(error)")
                    return .broken
                }
                for m in messages { dispatchReply(&state, m) }
                messages.removeAll(keepingCapacity: true)
                state.messages = messages
                continue
            }
            if n == 0 {
                markBroken("QEMU closed the display socket")
                return .broken
            }
            let e = currentErrno()
            switch e {
            case .resourceTemporarilyUnavailable:
                guard let deadline else { return .timedOut }
                if interrupted.load(ordering: .acquiring) { return .interrupted }
                switch waitFor(socket, events: Int16(POLLIN), wake: wake.readFD, deadline: deadline) {
                case .ready: continue
                case .timedOut: return .timedOut
                case .interrupted: return .interrupted
                }
            case .interrupted:
                continue
            default:
                markBroken("reading the display socket failed: \(e)")
                return .broken
            }
        }
    }

    /// Matches one message from QEMU against the replies it owes.
    private func dispatchReply(_ state: inout ReceiveState, _ message: DisplayMessage) {
        guard isUsable else { return }
        guard message.isReply, let request = message.request, let size = request.replyPayloadSize,
              Int(message.header.size) == size else {
            markBroken("malformed message from QEMU: request \(message.header.request), flags 0x\(String(message.header.flags.rawValue, radix: 16)), size \(message.header.size)")
            return
        }
        // QEMU answers in request order, with two exceptions: GET_EDID beyond its max_outputs
        // gets no reply at all, and DMABUF_UPDATE is answered when the display has flushed,
        // which may come after the replies to later requests if the console did not block.
        var i = 0
        while i < state.pending.count {
            let entry = state.pending[i]
            if entry.request == request {
                state.pending.remove(at: i)
                switch entry.role {
                case .negotiation: applyNegotiation(message)
                case .waiter: state.results[entry.token] = .message(message)
                case .discard: logger.debug("late \(request.name) reply dropped")
                }
                return
            }
            switch entry.request {
            case .dmabufUpdate:
                i += 1 // still owed
            case .getEDID:
                // QEMU 10 answers nothing to GET_EDID for a scanout >= max_outputs.
                state.pending.remove(at: i)
                if entry.role == .waiter { state.results[entry.token] = .dropped }
                logger.warning("QEMU did not answer GET_EDID (scanout beyond its max_outputs?)")
            default:
                markBroken("unexpected \(request.name) reply from QEMU (expected: \(entry.request.name))")
                return
            }
        }
        markBroken("unexpected \(request.name) reply from QEMU (none owed)")
    }

    /// Handles the GET_PROTOCOL_FEATURES reply: enables what both sides know, sends
    /// SET_PROTOCOL_FEATURES.
    private func applyNegotiation(_ message: DisplayMessage) {
        guard let offered = try? DisplayFeaturesPayload(decoding: message.payload).features else { return }
        let agreed = offered.intersection(options.supportedFeatures)
        _ = sendSimple(.setProtocolFeatures, payloadSize: DisplayFeaturesPayload.byteCount) {
            $0.storeBytes(of: agreed.rawValue, as: UInt64.self)
        }
        negotiated.store(Self.negotiatedBit | agreed.rawValue, ordering: .releasing)
        logger.info("display protocol features: QEMU offers \(offered), enabled \(agreed)")
    }
}

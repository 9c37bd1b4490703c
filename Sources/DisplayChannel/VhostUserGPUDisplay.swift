// The backend's side of the vhost-user-gpu display socket (QEMU docs/interop/vhost-user-gpu.rst):
// the `DisplaySink` that turns scanouts, updates and cursor moves into display messages.
// The jobs it relies on live apart: the message structs in Wire/, the bounded non-blocking
// socket in Transport/ (every wait bounded, see DisplaySocket.swift for why), the reply
// matching and feature exchange in Replies/.

#if canImport(Glibc)
import Glibc
#endif
import Logging
import struct Synchronization.Atomic
import SystemPackage
import SystemSupport

/// A `DisplaySink` that talks to QEMU over the vhost-user-gpu display socket.
///
/// Threads: any thread may call any method; sends are serialised, so messages never interleave.
/// Calls that wait for QEMU (the first protocol feature exchange, `displayInfo()`, `edid(scanout:)`)
/// wait at most `Options.timeout`, `updateDMABuf(_:rect:)` at most `Options.dmabufUpdateTimeout`,
/// and all return early on `interrupt()`. Sends wait at most `Options.timeout` without progress.
/// Once broken or closed, every call is a no-op returning nil/false/a failure.
public final class VhostUserGPUDisplay: DisplaySink {
    /// Tunables.
    public struct Options: Sendable {
        /// How long a send may make no progress, and how long a reply may take, before giving up.
        public var timeout: Duration
        /// How long `updateDMABuf` waits for QEMU's "flushed" reply. Short, because it is on the
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
    public static let maxScanouts = DisplayInfoReply.maxScanouts

    let socket: DisplaySocket
    let options: Options
    var logger: Logger { socket.logger }
    let negotiatedFeatures = DisplayNegotiatedFeatures()

    /// Bit n: QEMU holds a dmabuf for scanout n (the last DMABUF_SCANOUT(2) sent carried an fd).
    /// Written under `sender`; read lock-free so `updateDMABuf` never queues behind a big UPDATE.
    private let dmabufScanouts = Atomic<UInt32>(0)

    /// Send side: one message at a time. Lock order: `receiver` before `sender`.
    let sender: Mutex<SendState>
    /// Reply side: one waiter at a time, and the queue of replies QEMU owes, in request order.
    let receiver: Mutex<DisplayReceiveState>

    struct SendState: Sendable {
        var open = true
        var buffer: DisplaySendBuffer
        /// Scanouts that QEMU has a surface for (a SCANOUT with a size was sent). QEMU 10
        /// dereferences that surface on UPDATE without checking it exists.
        var hasSurface = [Bool](repeating: false, count: VhostUserGPUDisplay.maxScanouts)
        /// Last cursor position sent per scanout: CURSOR_POS_HIDE repeats it, as QEMU's C
        /// backend does (QEMU moves the hidden cursor there).
        var cursorPosition = [(x: UInt32, y: UInt32)](repeating: (0, 0), count: VhostUserGPUDisplay.maxScanouts)
    }

    /// Takes ownership of `socket` (the fd from `VHOST_USER_GPU_SET_SOCKET`), makes it
    /// non-blocking and sends GET_PROTOCOL_FEATURES without waiting for the reply (the caller is
    /// the vhost-user thread, and QEMU answers only after it has the vhost-user reply). The reply
    /// is read by the first call that needs it. On a thrown error `socket` has been closed.
    public init(socket: FileDescriptor, options: Options = Options(),
                logger: Logger = Logger(label: "vgpu.display")) throws(Errno) {
        let wake: OwnedFileDescriptor
        do throws(Errno) {
            try setNonBlocking(socket.rawValue)
            wake = try EventFD.make()
        } catch {
            try? socket.close()
            throw error
        }
        self.socket = DisplaySocket(fd: socket.rawValue, wake: wake, logger: logger)
        self.options = options
        self.sender = Mutex(SendState(buffer: DisplaySendBuffer(iovMax: self.socket.iovMax)))
        self.receiver = Mutex(DisplayReceiveState())
        startNegotiation()
    }

    deinit {
        close()
        sender.withLock { state in state.buffer.deallocate() }
        receiver.withLock { state in state.buffer.deallocate() }
    }

    // MARK: state

    /// True once the channel is unusable (peer gone, stream out of sync, garbage received, or
    /// closed). Permanent.
    public var isBroken: Bool { socket.isBroken }

    /// The features both sides enabled, or nil while QEMU's GET_PROTOCOL_FEATURES reply has not
    /// been read yet.
    public var protocolFeatures: DisplayProtocolFeatures? { negotiatedFeatures.features }

    /// Makes every current and future wait return at once (sends not yet started are dropped,
    /// a send cut off mid-message breaks the channel, reply waits return nil) until `resume()`.
    /// The vhost-user thread calls this before stopping queue workers. Never blocks.
    public func interrupt() { socket.interrupt() }

    /// Re-arms waiting after `interrupt()`. Does not repair a broken channel.
    public func resume() { socket.resume() }

    /// Closes the socket. Interrupts other threads' waits first, then waits for them to leave.
    public func close() {
        guard socket.beginClose() else { return }
        receiver.withLock { rstate in
            sender.withLock { sstate in
                sstate.open = false
                socket.closeDescriptor()
            }
            rstate.open = false
        }
    }

    private var isUsable: Bool { !isBroken }

    // MARK: DisplaySink

    /// GET_DISPLAY_INFO: QEMU's 16 `virtio_gpu_display_one` entries (disabled ones zero), or nil
    /// on timeout, interrupt, a broken channel or a non-OK reply.
    public func displayInfo() -> [DisplayMode]? {
        guard isUsable else { return nil }
        guard let reply = exchange(.getDisplayInfo, DisplayNoPayload()).message else { return nil }
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
            return exchangeLocked(&state, .getEDID, DisplayEDIDRequest(scanoutID: scanout), ping: true,
                                  deadline: deadline).message
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
            if sendLocked(&state, .scanout, payload) {
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
            let iov = state.buffer.iov
            let staged = state.buffer.stage(.update, header, payloadSize: size)
            // Safety: the caller guarantees `rows` rows of `rowBytes` at `stride` apart; the
            // kernel only reads through these iovecs.
            let base = UnsafeMutableRawPointer(mutating: pixels)
            var started = false
            if stride == rowBytes || rows == 1 {
                iov[staged] = iovec(iov_base: base, iov_len: rowBytes * rows)
                _ = socket.send(iov, staged + 1, .update, timeout: options.timeout, started: &started)
                return
            }
            var row = 0
            var first = true
            while row < rows {
                var n = first ? staged : 0
                while n < socket.iovMax && row < rows {
                    iov[n] = iovec(iov_base: base + row * stride, iov_len: rowBytes)
                    n += 1
                    row += 1
                }
                first = false
                guard socket.send(iov, n, .update, timeout: options.timeout, started: &started) else { return }
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
            let head = DisplayCursorUpdateHeader(pos: DisplayCursorPos(scanoutID: id, x: x, y: y), hotX: hotX, hotY: hotY)
            let iov = state.buffer.iov
            let staged = state.buffer.stage(.cursorUpdate, head, payloadSize: UInt32(DisplayCursorUpdate.byteCount))
            // Safety: the caller guarantees 64*64*4 readable bytes; the kernel only reads them.
            iov[staged] = iovec(iov_base: UnsafeMutableRawPointer(mutating: pixels), iov_len: DisplayCursorUpdate.pixelBytes)
            var started = false
            if socket.send(iov, staged + 1, .cursorUpdate, timeout: options.timeout, started: &started),
               Int(id) < Self.maxScanouts {
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
            if sendLocked(&state, request, DisplayCursorPos(scanoutID: id, x: x, y: y)), let slot {
                state.cursorPosition[slot] = (x, y)
            }
        }
    }

    // MARK: dmabuf scanout

    /// DMABUF_SCANOUT2 (with the modifier) when DMABUF2 was negotiated, else DMABUF_SCANOUT
    /// (then only `DisplayDMABuf.linearModifier` is allowed), with a duplicate of `buffer.fd` as
    /// SCM_RIGHTS; the caller keeps its fd. nil sends DMABUF_SCANOUT without an fd: QEMU drops
    /// its dmabuf and disables the GL scanout. Waits (bounded by `Options.timeout`) for the
    /// protocol feature reply if it has not been read yet, so never call it from the vhost-user
    /// thread (QEMU answers nothing while it waits for that thread). Returns true if sent.
    ///
    /// QEMU 10 imports the buffer with the scanout's width and height but ignores `rect.x` and
    /// `rect.y` (it shows the buffer from its top-left corner); they are sent as given.
    public func scanoutDMABuf(_ id: UInt32, rect: PixelRect, buffer: DisplayDMABuf?) -> Bool {
        guard isUsable else { return false }
        guard id < UInt32(Self.maxScanouts) else {
            logger.warning("DMABUF_SCANOUT for scanout \(id) dropped: id out of range")
            return false
        }
        guard let buffer else {
            pollNegotiation()
            // QEMU reads only scanout_id when no fd comes with the message.
            let payload = DisplayDMABufScanout(scanoutID: id, width: 0, height: 0, fdWidth: 0, fdHeight: 0,
                                               fdStride: 0, fourcc: 0)
            return sendDMABufScanout(id, enable: false, .dmabufScanout, payload, fd: -1)
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
        let payload = DisplayDMABufScanout(scanoutID: id, rect: rect, buffer: buffer)
        if useScanout2 {
            let payload2 = DisplayDMABufScanout2(scanout: payload, modifier: buffer.modifier)
            return sendDMABufScanout(id, enable: true, .dmabufScanout2, payload2, fd: buffer.fd.rawValue)
        }
        guard buffer.modifier == DisplayDMABuf.linearModifier else {
            logger.error("DMABUF_SCANOUT with modifier 0x\(String(buffer.modifier, radix: 16)) dropped: DMABUF2 not negotiated")
            return false
        }
        return sendDMABufScanout(id, enable: true, .dmabufScanout, payload, fd: buffer.fd.rawValue)
    }

    /// Sends a DMABUF_SCANOUT(2) and records whether QEMU now holds a dmabuf for `id`.
    private func sendDMABufScanout<P: DisplayPayload>(_ id: UInt32, enable: Bool, _ request: DisplayRequest, _ payload: P,
                                                      fd: Int32) -> Bool {
        sender.withLock { state in
            guard state.open, isUsable else { return false }
            guard sendLocked(&state, request, payload, fd: fd) else { return false }
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
    public func updateDMABuf(_ id: UInt32, rect: PixelRect) -> DMABufUpdateResult {
        guard isUsable else { return .failed(.disconnected) }
        guard id < UInt32(Self.maxScanouts),
              dmabufScanouts.load(ordering: .acquiring) & (UInt32(1) << id) != 0 else {
            return .failed(.noScanout)
        }
        let header = DisplayUpdateHeader(scanoutID: id, rect: rect)
        let timeout = options.dmabufUpdateTimeout
        let result = receiver.withLock { state in
            exchangeLocked(&state, .dmabufUpdate, header, ping: false,
                           deadline: ContinuousClock.now + timeout, sendTimeout: timeout)
        }
        switch result {
        case .reply: return .flushed
        case .timedOut, .unanswered: return .timedOut
        case .interrupted: return .failed(.interrupted)
        case .broken: return .failed(.disconnected)
        case .notSent:
            if isBroken { return .failed(.disconnected) }
            return socket.isInterrupted ? .failed(.interrupted) : .timedOut
        }
    }

    // MARK: sending

    /// With `sender` held: stages `request` with `payload` and sends it (no extra iovecs).
    private func sendLocked<P: DisplayWireEncodable>(_ state: inout SendState, _ request: DisplayRequest, _ payload: P,
                                                     fd: Int32 = -1, timeout: Duration? = nil) -> Bool {
        let count = state.buffer.stage(request, payload)
        var started = false
        return socket.send(state.buffer.iov, count, fd: fd, request, timeout: timeout ?? options.timeout, started: &started)
    }

    /// Sends one small message. `timeout`: how long the send may make no progress (default
    /// `Options.timeout`).
    func sendMessage<P: DisplayWireEncodable>(_ request: DisplayRequest, _ payload: P, timeout: Duration? = nil) -> Bool {
        sender.withLock { state in
            guard state.open, isUsable else { return false }
            return sendLocked(&state, request, payload, timeout: timeout)
        }
    }
}

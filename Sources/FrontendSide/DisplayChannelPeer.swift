// QEMU's side of the vhost-user-gpu display socket, in process, for tests and the benchmark.
// It answers like QEMU 10's hw/display/vhost-user-gpu.c: replies echo the request code with
// flags 0x4; GET_PROTOCOL_FEATURES, GET_DISPLAY_INFO, GET_EDID (only for scanout ids below
// max_outputs) and DMABUF_UPDATE are answered, nothing else. It also keeps what QEMU would show
// (a framebuffer per scanout, the cursor, the dmabuf fd per scanout) and notes every message
// QEMU would choke on.

#if canImport(Glibc)
import Glibc
#endif
import CShims
import struct Synchronization.Atomic
import SystemPackage
import SystemSupport
import DisplayChannel

/// One scanout's pixels as the peer holds them: `width*height` XRGB8888 pixels, packed rows.
public struct PeerFramebuffer: Sendable, Equatable {
    public var width: UInt32
    public var height: UInt32
    public var pixels: [UInt8]

    public init(width: UInt32, height: UInt32) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * 4)
    }

    /// A surface with the given pixels (empty when the peer only counts).
    public init(width: UInt32, height: UInt32, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The 32-bit pixel at (x, y), native-endian (0xXXRRGGBB on little-endian).
    public func pixel(x: Int, y: Int) -> UInt32 {
        let i = (y * Int(width) + x) * 4
        return UInt32(pixels[i]) | UInt32(pixels[i + 1]) << 8 | UInt32(pixels[i + 2]) << 16 | UInt32(pixels[i + 3]) << 24
    }
}

/// The cursor as the peer last saw it.
public struct PeerCursor: Sendable, Equatable {
    public var scanoutID: UInt32 = 0
    public var x: UInt32 = 0
    public var y: UInt32 = 0
    /// CURSOR_POS and CURSOR_UPDATE show the cursor, CURSOR_POS_HIDE hides it (QEMU's
    /// `dpy_mouse_set(con, x, y, request != CURSOR_POS_HIDE)`).
    public var visible = false
    public var hotX: UInt32 = 0
    public var hotY: UInt32 = 0
    /// The last CURSOR_UPDATE image, 64*64*4 bytes of ARGB8888 words.
    public var image: [UInt8]?
    public init() {}
}

/// A DMABUF_SCANOUT(2) as received.
public struct PeerDMABuf: Sendable, Equatable {
    /// `.dmabufScanout` or `.dmabufScanout2`.
    public var request: DisplayRequest
    /// The payload as sent: scanout id, rect, fd_width/fd_height/fd_stride/fd_flags, fourcc.
    public var scanout: DisplayDMABufScanout
    /// Set for DMABUF_SCANOUT2.
    public var modifier: UInt64?
    /// (st_dev, st_ino) of the fd that came with it, nil if none (disable).
    public var fileID: FileID?
    /// The fd received with it, -1 if none (disable). Owned by the peer, like QEMU keeps it:
    /// open until the next DMABUF_SCANOUT(2) for this scanout or the peer's `close()`. Read its
    /// pixels with `DisplayChannelPeer.dmabufFramebuffer(scanout:)`.
    public var fd: Int32

    public init(request: DisplayRequest, scanout: DisplayDMABufScanout, modifier: UInt64?, fileID: FileID?, fd: Int32) {
        self.request = request; self.scanout = scanout; self.modifier = modifier; self.fileID = fileID; self.fd = fd
    }

    /// The scanout's rect within the buffer.
    public var rect: PixelRect { scanout.rect }
    /// True when a buffer came with it (false: the scanout was disabled).
    public var isEnabled: Bool { fd >= 0 }

    public struct FileID: Sendable, Equatable, Hashable {
        public var device: UInt64
        public var inode: UInt64
        public init(device: UInt64, inode: UInt64) { self.device = device; self.inode = inode }
        /// The identity of an open fd (fstat), for comparing what was sent with what arrived.
        public init?(fd: Int32) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { return nil }
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }
    }
}

/// Everything the peer has seen.
public struct DisplayPeerState: Sendable {
    /// Kinds of the messages received, in order (when `recordLog` is on).
    public var log: [DisplayRequest] = []
    /// Messages received per kind (always counted).
    public var counts: [DisplayRequest: Int] = [:]
    /// What SET_PROTOCOL_FEATURES enabled, nil if not received.
    public var enabledFeatures: DisplayProtocolFeatures?
    /// Surfaces created by SCANOUT and painted by UPDATE (pixels empty without `storePixels`).
    public var framebuffers: [UInt32: PeerFramebuffer] = [:]
    public var cursor = PeerCursor()
    public var cursorUpdates = 0
    /// The last DMABUF_SCANOUT(2) per scanout (below max_outputs), with the fd it holds.
    public var dmabufScanouts: [UInt32: PeerDMABuf] = [:]
    /// Every DMABUF_UPDATE received, in order (answered or not).
    public var dmabufUpdates: [DisplayUpdateHeader] = []
    /// DMABUF_UPDATE replies sent.
    public var dmabufUpdateReplies = 0
    /// UPDATE messages and their pixel bytes (counted in both modes).
    public var updateFrames = 0
    public var updatePixelBytes = 0
    /// All bytes read from the socket.
    public var bytesReceived = 0
    /// File descriptors received with SCM_RIGHTS.
    public var fdsReceived = 0
    /// Protocol violations: messages QEMU would misread, crash on, or ignore.
    public var errors: [String] = []
    /// The backend closed its end, or reading failed.
    public var disconnected = false
    /// The peer stopped reading after a framing error (the stream is out of sync).
    public var desynchronized = false

    public init() {}

    public func count(_ request: DisplayRequest) -> Int { counts[request, default: 0] }
}

/// QEMU's end of the display channel for in-process tests and benchmarks: a reader thread that
/// decodes every message, answers like QEMU 10 and records the results in `DisplayPeerState`.
public final class DisplayChannelPeer: Sendable {
    /// How the peer behaves.
    public struct Configuration: Sendable {
        /// Answer to GET_PROTOCOL_FEATURES (QEMU 10: EDID | DMABUF2).
        public var offeredFeatures: DisplayProtocolFeatures = [.edid, .dmabuf2]
        /// QEMU's `max_outputs`: SCANOUT/UPDATE/cursor for ids at or above are ignored and
        /// GET_EDID for them gets no reply, like QEMU.
        public var maxOutputs: UInt32 = 1
        /// GET_DISPLAY_INFO answer (at most 16; the rest are sent disabled).
        public var heads: [DisplayMode] = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1280, height: 800), enabled: true)]
        /// GET_EDID answer (at most 1024 bytes; the reply's `size` is its count. QEMU 10 sends
        /// its generated EDID zero-padded with `size` 1024).
        public var edid: [UInt8] = DisplayChannelPeer.sampleEDID
        /// Keep framebuffers and apply UPDATE pixels; false counts UPDATE bytes without storing
        /// or even buffering them (benchmark mode).
        public var storePixels = true
        /// Record every message kind in `log`.
        public var recordLog = true
        /// Answer DMABUF_UPDATE (QEMU does once flushed); false never answers it. The initial
        /// mode of `setDMABufUpdateReplies(_:)`.
        public var replyToDMABufUpdate = true
        /// Test hook: for a request QEMU answers, return raw bytes to send instead of the normal
        /// reply ([] sends nothing).
        public var replyOverride: (@Sendable (DisplayMessage) -> [UInt8]?)?
        /// Bytes read per recvmsg.
        public var readChunkSize = 256 << 10

        public init() {}
    }

    /// A valid 128-byte EDID 1.4 base block (checksum included), used by default.
    public static let sampleEDID: [UInt8] = {
        var e: [UInt8] = [0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x49, 0x14, 0x34, 0x12, 0, 0, 0, 0,
                          0x2a, 0x20, 0x01, 0x04]
        e += [UInt8](repeating: 0, count: 128 - e.count)
        e[127] = UInt8((256 - e.reduce(0) { ($0 + Int($1)) } % 256) % 256)
        return e
    }()

    private let core: PeerCore

    /// Takes ownership of `socket` (QEMU's end) and starts the reader thread.
    public init(socket: FileDescriptor, configuration: Configuration = Configuration()) throws(Errno) {
        core = try PeerCore(socket: socket, configuration: configuration)
        try core.start()
    }

    /// A connected socket pair with a peer on one end; returns the backend's end (give it to
    /// `VhostUserGPUDisplay`).
    public static func connected(configuration: Configuration = Configuration()) throws(Errno)
        -> (peer: DisplayChannelPeer, backendSocket: FileDescriptor) {
        let (a, b) = try makeDisplaySocketPair()
        do throws(Errno) {
            return (try DisplayChannelPeer(socket: b, configuration: configuration), a)
        } catch {
            try? a.close()
            throw error
        }
    }

    deinit { core.close() }

    /// A copy of everything seen so far.
    public var state: DisplayPeerState { core.shared.withLock { $0 } }

    /// Runs `body` on the live state (no copy), under the peer's lock.
    public func withState<R>(_ body: (inout DisplayPeerState) -> R) -> R {
        core.shared.withLock { body(&$0) }
    }

    /// Polls until `condition` holds (true) or `timeout` passes (false).
    @discardableResult
    public func waitFor(timeout: Duration, _ condition: (DisplayPeerState) -> Bool) -> Bool {
        let deadline = monotonicSeconds() + timeout.inSeconds
        while true {
            if core.shared.withLock({ condition($0) }) { return true }
            if monotonicSeconds() >= deadline { return false }
            usleep(500)
        }
    }

    /// Stops reading the socket, like QEMU waiting on a vhost-user reply or a blocked GL
    /// display: the backend's sends fill the socket buffer and its reply waits get nothing.
    public func stall() {
        core.stalled.store(true, ordering: .releasing)
        EventFD.signal(core.wake.rawValue)
    }

    /// Reads again after `stall()`.
    public func unstall() {
        core.stalled.store(false, ordering: .releasing)
        EventFD.signal(core.wake.rawValue)
    }

    /// How the peer answers DMABUF_UPDATE from now on.
    public enum DMABufUpdateReplies: Sendable {
        /// At once (QEMU with a console that flushes at once, or without GL).
        case answer
        /// Not yet: replies are owed and sent, in order, when the mode goes back to `.answer`
        /// (QEMU while its GL display has not flushed).
        case hold
        /// Never (a broken peer).
        case drop
    }

    /// Switches how DMABUF_UPDATE is answered; `.answer` first sends the replies held so far.
    public func setDMABufUpdateReplies(_ mode: DMABufUpdateReplies) {
        core.setDMABufUpdateReplies(mode)
    }

    /// `rect` of scanout `id`'s dmabuf as the display would read it: maps the fd the peer holds
    /// (read-only, shared) and copies the rect's rows, 4 bytes per pixel, rows as stored (no
    /// flip without Y_0_TOP). nil without a buffer, or when the layout runs past the end of the
    /// file (reading there would SIGBUS).
    public func dmabufFramebuffer(scanout id: UInt32) -> PeerFramebuffer? {
        // Under the lock: the reader thread cannot close the fd meanwhile.
        core.shared.withLock { s in
            guard let d = s.dmabufScanouts[id], d.fd >= 0 else { return nil }
            return PeerCore.readPixels(fd: d.fd, d.scanout)
        }
    }

    /// Writes raw bytes to the backend (tests: unsolicited or malformed messages).
    public func sendRaw(_ bytes: [UInt8]) {
        core.send(bytes)
    }

    /// Stops the reader and closes QEMU's end (the backend then sees EOF / EPIPE).
    public func close() {
        core.close()
    }
}

/// The peer's state and reader thread; the thread holds this, not the public object, so
/// dropping the last `DisplayChannelPeer` reference stops the thread.
final class PeerCore: Sendable {
    let socket: Int32
    /// An eventfd: stop, stall and unstall wake the reader.
    let wake: OwnedFileDescriptor
    let configuration: DisplayChannelPeer.Configuration
    let shared: Mutex<DisplayPeerState>
    let stalled = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    let thread: Mutex<WorkerThread?>
    let sendLock = Mutex<Bool>(true)
    /// DMABUF_UPDATE reply mode and the replies held back in `.hold`.
    let dmabufReplies: Mutex<(mode: DisplayChannelPeer.DMABufUpdateReplies, held: Int)>

    init(socket: FileDescriptor, configuration: DisplayChannelPeer.Configuration) throws(Errno) {
        self.socket = socket.rawValue
        self.configuration = configuration
        self.shared = Mutex(DisplayPeerState())
        self.thread = Mutex(nil)
        self.dmabufReplies = Mutex((configuration.replyToDMABufUpdate ? .answer : .drop, 0))
        do throws(Errno) {
            self.wake = try EventFD.make()
        } catch {
            try? socket.close()
            throw error
        }
    }

    deinit {
        close()
    }

    func start() throws(Errno) {
        let t = try WorkerThread(name: "display-peer") { [self] _ in self.readLoop() }
        thread.withLock { $0 = t }
    }

    func close() {
        guard stopping.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            return
        }
        _ = Glibc.shutdown(socket, Int32(SHUT_RDWR))
        EventFD.signal(wake.rawValue)
        thread.withLock { t -> WorkerThread? in defer { t = nil }; return t }?.join()
        sendLock.withLock { open in
            open = false
            _ = Glibc.close(socket)
        }
        // QEMU's dmabufs go with it.
        shared.withLock { s in
            for (id, d) in s.dmabufScanouts where d.fd >= 0 {
                _ = Glibc.close(d.fd)
                s.dmabufScanouts[id]?.fd = -1
            }
        }
    }

    func setDMABufUpdateReplies(_ mode: DisplayChannelPeer.DMABufUpdateReplies) {
        let release = dmabufReplies.withLock { r -> Int in
            r.mode = mode
            guard mode == .answer else { return 0 }
            defer { r.held = 0 }
            return r.held
        }
        // Replies are identical bytes, so racing the reader's own replies cannot reorder them.
        for _ in 0..<release { sendDMABufUpdateReply() }
    }

    private func sendDMABufUpdateReply() {
        send(DisplayMessage.reply(.dmabufUpdate))
        shared.withLock { $0.dmabufUpdateReplies += 1 }
    }

    /// Copies `scanout.rect` out of the buffer `fd` (layout from the payload), or nil.
    static func readPixels(fd: Int32, _ scanout: DisplayDMABufScanout) -> PeerFramebuffer? {
        let stride = Int(scanout.fdStride)
        let length = stride * Int(scanout.fdHeight)
        let rowBytes = Int(scanout.width) * 4
        guard length > 0, (Int(scanout.x) * 4 + rowBytes) <= stride,
              Int(scanout.y) + Int(scanout.height) <= Int(scanout.fdHeight) else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) >= length else { return nil }
        guard let base = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), base != MAP_FAILED else { return nil }
        defer { munmap(base, length) }
        var fb = PeerFramebuffer(width: scanout.width, height: scanout.height)
        fb.pixels.withUnsafeMutableBytes { dst in
            for row in 0..<Int(scanout.height) {
                let src = (Int(scanout.y) + row) * stride + Int(scanout.x) * 4
                // Safety: rows checked against the mapping (length <= file size) above.
                (dst.baseAddress! + row * rowBytes).copyMemory(from: base + src, byteCount: rowBytes)
            }
        }
        return fb
    }

    // MARK: reader

    private func readLoop() {
        var decoder = DisplayMessageDecoder(discardUpdatePixels: !configuration.storePixels)
        let capacity = max(4096, configuration.readChunkSize)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        // Fds received and the stream offset where the recv that brought them ended. The kernel
        // glues fd-less bytes in front of an fd-carrying message into one recv (never after it),
        // so an fd belongs to the last message that starts before that offset.
        var pendingFDs: [(fd: Int32, chunkEnd: Int)] = []
        defer { for p in pendingFDs { _ = Glibc.close(p.fd) } }
        var streamEnd = 0
        var nextMessageStart = 0

        while !stopping.load(ordering: .acquiring) {
            if stalled.load(ordering: .acquiring) {
                _ = EventFD.wait(wake.rawValue, until: nil)
                EventFD.drain(wake.rawValue)
                continue
            }
            // A failed poll falls through: the receive reports the error.
            if let revents = try? Poll.wait([(socket, Int16(POLLIN)), (wake.rawValue, Int16(POLLIN))], until: nil),
               revents[1] != 0 {
                EventFD.drain(wake.rawValue)
                continue
            }
            let received: (count: Int, fds: [OwnedFileDescriptor])
            do {
                received = try UnixSocket.receiveSome(socket, into: UnsafeMutableRawBufferPointer(start: buffer, count: capacity))
            } catch .system(.wouldBlock) {
                continue
            } catch {
                shared.withLock {
                    if case .controlDataTruncated = error { $0.errors.append("receive: \(error)") }
                    $0.disconnected = true
                }
                return
            }
            let n = received.count
            if n == 0 {
                shared.withLock { $0.disconnected = true }
                return
            }
            streamEnd += n
            for fd in received.fds { pendingFDs.append((fd.release(), streamEnd)) }
            shared.withLock { $0.bytesReceived += n; $0.fdsReceived += received.fds.count }
            var messages: [DisplayMessage] = []
            do {
                try decoder.feed(UnsafeRawBufferPointer(start: buffer, count: n)) { messages.append($0) }
            } catch {
                shared.withLock {
                    $0.errors.append("framing: \(error)")
                    $0.desynchronized = true
                }
                for m in messages { handle(m, fd: takeFD(for: m, start: &nextMessageStart, &pendingFDs)) }
                return
            }
            for m in messages { handle(m, fd: takeFD(for: m, start: &nextMessageStart, &pendingFDs)) }
        }
    }

    /// The fd that came with `message` (which starts at `start`), or -1; advances `start`.
    /// Fds left behind by earlier messages are closed and noted as errors.
    private func takeFD(for message: DisplayMessage, start: inout Int, _ pending: inout [(fd: Int32, chunkEnd: Int)]) -> Int32 {
        let messageStart = start
        let messageEnd = start + DisplayMessageHeader.byteCount + Int(message.header.size)
        start = messageEnd
        var taken: Int32 = -1
        while let first = pending.first, first.chunkEnd <= messageEnd {
            pending.removeFirst()
            if first.chunkEnd > messageStart, taken < 0 {
                taken = first.fd
            } else {
                _ = Glibc.close(first.fd)
                shared.withLock { $0.errors.append("fd received with no message to carry it") }
            }
        }
        return taken
    }

    private func handle(_ message: DisplayMessage, fd received: Int32) {
        guard let request = message.request else {
            shared.withLock { $0.errors.append("unknown request \(message.header.request)") }
            return
        }
        var violation: String?
        do {
            try message.validateAsRequest()
        } catch {
            violation = "\(error)"
        }
        // Like QEMU's qemu_chr_fe_get_msgfd: the fd that came with the message bytes. QEMU
        // ignores (leaks until the next one) an fd on any other message; it is an error here.
        var fd = received
        defer { if fd >= 0 { _ = Glibc.close(fd) } }
        if fd >= 0, request != .dmabufScanout, request != .dmabufScanout2 {
            shared.withLock { $0.errors.append("\(request.name) carried an fd") }
        }

        var reply: [UInt8]?
        shared.withLock { s in
            if configuration.recordLog { s.log.append(request) }
            s.counts[request, default: 0] += 1
            if let violation {
                s.errors.append("\(request.name): \(violation)")
                return
            }
            reply = apply(request, message, fd: &fd, to: &s)
        }
        if request.replyPayloadSize != nil, let override = configuration.replyOverride, let raw = override(message) {
            reply = raw.isEmpty ? nil : raw
        }
        if let reply { send(reply) }
    }

    /// Applies one valid request to the state; returns QEMU's reply bytes, if any.
    /// Sets `fd` to -1 when it keeps it.
    private func apply(_ request: DisplayRequest, _ message: DisplayMessage, fd: inout Int32,
                       to s: inout DisplayPeerState) -> [UInt8]? {
        let p = message.payload
        switch request {
        case .getProtocolFeatures:
            return DisplayMessage.reply(.getProtocolFeatures, DisplayFeaturesPayload(configuration.offeredFeatures))
        case .setProtocolFeatures:
            s.enabledFeatures = (try? DisplayFeaturesPayload(decoding: p))?.features
            return nil
        case .getDisplayInfo:
            return DisplayMessage.reply(.getDisplayInfo, DisplayInfoReply(modes: Array(configuration.heads.prefix(16))))
        case .getEDID:
            guard let r = try? DisplayEDIDRequest(decoding: p), r.scanoutID < configuration.maxOutputs else {
                s.errors.append("GET_EDID for a scanout >= max_outputs (QEMU sends no reply)")
                return nil
            }
            return DisplayMessage.reply(.getEDID, DisplayEDIDReply(blob: Array(configuration.edid.prefix(1024))))
        case .cursorPos, .cursorPosHide:
            guard let pos = try? DisplayCursorPos(decoding: p), pos.scanoutID < configuration.maxOutputs else { return nil }
            s.cursor.scanoutID = pos.scanoutID
            s.cursor.x = pos.x
            s.cursor.y = pos.y
            s.cursor.visible = request == .cursorPos
            return nil
        case .cursorUpdate:
            guard let c = try? DisplayCursorUpdate(decoding: p), c.pos.scanoutID < configuration.maxOutputs else { return nil }
            s.cursor.scanoutID = c.pos.scanoutID
            s.cursor.x = c.pos.x
            s.cursor.y = c.pos.y
            s.cursor.visible = true
            s.cursor.hotX = c.hotX
            s.cursor.hotY = c.hotY
            s.cursor.image = c.pixels
            s.cursorUpdates += 1
            return nil
        case .scanout:
            guard let sc = try? DisplayScanout(decoding: p), sc.scanoutID < configuration.maxOutputs else { return nil }
            if sc.width == 0 {
                // QEMU frees the console surface; a later UPDATE would touch freed memory.
                s.framebuffers[sc.scanoutID] = nil
            } else if configuration.storePixels {
                s.framebuffers[sc.scanoutID] = PeerFramebuffer(width: sc.width, height: sc.height)
            } else {
                s.framebuffers[sc.scanoutID] = PeerFramebuffer(width: sc.width, height: sc.height, pixels: [])
            }
            return nil
        case .update:
            guard let u = try? DisplayUpdateHeader(decoding: Array(p.prefix(DisplayUpdateHeader.byteCount))) else { return nil }
            s.updateFrames += 1
            s.updatePixelBytes += Int(message.header.size) - DisplayUpdateHeader.byteCount
            guard u.scanoutID < configuration.maxOutputs else { return nil }
            guard s.framebuffers[u.scanoutID] != nil else {
                s.errors.append("UPDATE for scanout \(u.scanoutID) without a SCANOUT surface (QEMU would crash)")
                return nil
            }
            if configuration.storePixels {
                Self.paint(&s.framebuffers[u.scanoutID]!, u, pixels: p, offset: DisplayUpdateHeader.byteCount)
            }
            return nil
        case .dmabufScanout, .dmabufScanout2:
            let base: DisplayDMABufScanout
            var modifier: UInt64?
            if request == .dmabufScanout2 {
                guard let d = try? DisplayDMABufScanout2(decoding: p) else { return nil }
                base = d.scanout
                modifier = d.modifier
                if !(s.enabledFeatures ?? []).contains(.dmabuf2) {
                    s.errors.append("DMABUF_SCANOUT2 without DMABUF2 enabled")
                }
            } else {
                guard let d = try? DisplayDMABufScanout(decoding: p) else { return nil }
                base = d
            }
            // QEMU closes the fd of an out-of-range scanout (the caller's defer does here).
            guard base.scanoutID < configuration.maxOutputs else { return nil }
            // QEMU releases the previous dmabuf of the scanout first.
            if let old = s.dmabufScanouts[base.scanoutID], old.fd >= 0 { _ = Glibc.close(old.fd) }
            s.dmabufScanouts[base.scanoutID] = PeerDMABuf(request: request, scanout: base, modifier: modifier,
                                                          fileID: fd >= 0 ? PeerDMABuf.FileID(fd: fd) : nil, fd: fd)
            fd = -1
            return nil
        case .dmabufUpdate:
            if let u = try? DisplayUpdateHeader(decoding: p) { s.dmabufUpdates.append(u) }
            let answer = dmabufReplies.withLock { r -> Bool in
                switch r.mode {
                case .answer: return true
                case .hold: r.held += 1; return false
                case .drop: return false
                }
            }
            if answer { s.dmabufUpdateReplies += 1 }
            return answer ? DisplayMessage.reply(.dmabufUpdate) : nil
        }
    }

    /// Copies an UPDATE's packed rows into the framebuffer, clipped like pixman's composite.
    private static func paint(_ fb: inout PeerFramebuffer, _ u: DisplayUpdateHeader, pixels: [UInt8], offset: Int) {
        guard u.x < fb.width, u.y < fb.height else { return }
        let w = Int(min(u.width, fb.width - u.x))
        let h = Int(min(u.height, fb.height - u.y))
        let srcRow = Int(u.width) * 4
        let dstRow = Int(fb.width) * 4
        pixels.withUnsafeBytes { src in
            fb.pixels.withUnsafeMutableBytes { dst in
                for row in 0..<h {
                    let s = offset + row * srcRow
                    let d = (Int(u.y) + row) * dstRow + Int(u.x) * 4
                    // Safety: rows are clipped to both buffers above.
                    (dst.baseAddress! + d).copyMemory(from: src.baseAddress! + s, byteCount: w * 4)
                }
            }
        }
    }

    /// Blocking full write (replies are small), serialised, SIGPIPE-free.
    func send(_ bytes: [UInt8]) {
        sendLock.withLock { open in
            guard open else { return }
            var off = 0
            while off < bytes.count {
                let sent = bytes.withUnsafeBytes { b in
                    Result { () throws(Errno) in try retryingEINTR { Glibc.send(socket, b.baseAddress! + off, b.count - off, Int32(MSG_NOSIGNAL)) } }
                }
                switch sent {
                case let .success(n): off += n
                case .failure(.wouldBlock): _ = try? Poll.wait(socket, events: Int16(POLLOUT), timeout: 1)
                case .failure:
                    shared.withLock { $0.disconnected = true }
                    return
                }
            }
        }
    }
}

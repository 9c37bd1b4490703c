import FrontendSide
import CShims
import Glibc
import SystemPackage
import Testing
import VGPUTestSupport

@testable import DisplayChannel
import SystemSupport

/// `DRM_FORMAT_XRGB8888` ('XR24').
let xrgb8888: UInt32 = 0x3432_5258

/// A memfd standing in for a dmabuf (the wire is the same; this host has no dmabuf exporter),
/// holding `bytes`.
func makeBuffer(_ name: String, bytes: [UInt8]) throws -> FileDescriptor {
    let raw = vgpu_memfd_create(name, 0)
    try #require(raw >= 0)
    let fd = FileDescriptor(rawValue: raw)
    do {
        try #require(ftruncate(raw, off_t(bytes.count)) == 0)
        _ = try fd.writeAll(toAbsoluteOffset: 0, bytes)
    } catch {
        try? fd.close()
        throw error
    }
    return fd
}

/// Compares pixels without printing both arrays on a mismatch.
func expectSamePixels(_ got: [UInt8]?, _ expected: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
    guard let got else {
        Issue.record("no pixels", sourceLocation: sourceLocation)
        return
    }
    if got != expected {
        let first = zip(got, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, expected.count)
        Issue.record("pixels differ from byte \(first) (\(got.count) vs \(expected.count) bytes)", sourceLocation: sourceLocation)
    }
}

/// Open fds of this process whose target names the memfd `name`.
func openCount(ofMemfd name: String) -> Int {
    openFDSet().filter { $0.contains("/memfd:\(name)") }.count
}

@Suite("DMABuf codec")
struct DisplayDMABufCodecTests {
    @Test func scanoutPayloadBytesAreThePackedStruct() throws {
        let buffer = DisplayDMABuf(fd: FileDescriptor(rawValue: 99), width: 0x0102, height: 0x0304, stride: 0x0506,
                                   fourcc: 0x8000_0001, modifier: 0x1122_3344_5566_7788, flags: .yZeroTop)
        let payload = DisplayDMABufScanout(scanoutID: 3, rect: PixelRect(x: 4, y: 5, width: 6, height: 7), buffer: buffer)
        let le: (UInt32) -> [UInt8] = { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        let expected = le(3) + le(4) + le(5) + le(6) + le(7) + le(0x0102) + le(0x0304) + le(0x0506) + le(1) + le(0x8000_0001)
        #expect(payload.encoded() == expected)
        #expect(payload.fourcc == Int32(bitPattern: 0x8000_0001)) // C `int fd_drm_fourcc`
        #expect(payload.rect == PixelRect(x: 4, y: 5, width: 6, height: 7))

        let v2 = DisplayDMABufScanout2(scanout: payload, modifier: buffer.modifier)
        let expected2 = expected + [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        #expect(v2.encoded() == expected2)
        #expect(try DisplayDMABufScanout2(decoding: expected2) == v2)

        // The allocation-free stores write the same bytes.
        var stored = [UInt8](repeating: 0xAA, count: 49)
        stored.withUnsafeMutableBytes { v2.store(to: $0.baseAddress! + 1) }
        #expect(Array(stored[1...]) == expected2)
        #expect(stored[0] == 0xAA)
        var stored1 = [UInt8](repeating: 0xAA, count: 40)
        stored1.withUnsafeMutableBytes { payload.store(to: $0.baseAddress!) }
        #expect(stored1 == expected)
    }

    @Test func messagesOnTheWire() throws {
        let payload = DisplayDMABufScanout(scanoutID: 0, width: 4, height: 4, fdWidth: 4, fdHeight: 4, fdStride: 16,
                                           fourcc: Int32(bitPattern: xrgb8888))
        let scanout = DisplayMessage.request(.dmabufScanout, payload)
        #expect(Array(scanout[0..<12]) == [9, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0, 0])
        let scanout2 = DisplayMessage.request(.dmabufScanout2, DisplayDMABufScanout2(scanout: payload, modifier: 5))
        #expect(Array(scanout2[0..<12]) == [12, 0, 0, 0, 0, 0, 0, 0, 48, 0, 0, 0])
        #expect(scanout2.count == 60)
        let update = DisplayMessage.request(.dmabufUpdate, DisplayUpdateHeader(scanoutID: 1, x: 2, y: 3, width: 4, height: 5))
        #expect(update == [10, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0])
        for bytes in [scanout, scanout2, update] {
            try #require(try decodeAll(bytes).count == 1)
            try decodeAll(bytes)[0].validateAsRequest()
        }
    }

    @Test func updateReplyIsAHeaderWithTheReplyFlag() throws {
        // What QEMU's vhost_user_gpu_unblock() sends.
        let raw: [UInt8] = [10, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]
        #expect(DisplayMessage.reply(.dmabufUpdate) == raw)
        let messages = try decodeAll(raw)
        try #require(messages.count == 1)
        #expect(messages[0].request == .dmabufUpdate)
        #expect(messages[0].isReply)
        #expect(messages[0].payload.isEmpty)
        try messages[0].validateAsReply(to: .dmabufUpdate)
        // A reply with a payload, or without the flag, is not one.
        let withPayload = try decodeAll([10, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0])[0]
        #expect(throws: DisplayProtocolError.self) { try withPayload.validateAsReply(to: .dmabufUpdate) }
        let noFlag = try decodeAll([10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])[0]
        #expect(throws: DisplayProtocolError.self) { try noFlag.validateAsReply(to: .dmabufUpdate) }
    }

    @Test func sinksWithoutADMABufPathSayNo() throws {
        let sink: any DisplaySink = NullDisplay()
        let buffer = DisplayDMABuf(fd: FileDescriptor(rawValue: 0), width: 1, height: 1, stride: 4, fourcc: xrgb8888)
        #expect(!sink.scanoutDMABuf(0, rect: PixelRect(x: 0, y: 0, width: 1, height: 1), buffer: buffer))
        #expect(sink.updateDMABuf(0, rect: PixelRect(x: 0, y: 0, width: 1, height: 1)) == .failed(.unsupported))
    }
}

@Suite("DMABuf scanout over a socket pair")
struct DisplayDMABufTests {
    static let w = 48
    static let h = 20
    static let stride = 48 * 4 + 64
    static let full = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))

    /// A memfd with a pattern frame and its `DisplayDMABuf`.
    static func frame(_ name: String, seed: UInt32, modifier: UInt64 = 0) throws -> ([UInt8], FileDescriptor, DisplayDMABuf) {
        let pixels = pixelPattern(width: w, height: h, stride: stride, seed: seed)
        let fd = try makeBuffer(name, bytes: pixels)
        let buffer = DisplayDMABuf(fd: fd, width: UInt32(w), height: UInt32(h), stride: UInt32(stride), fourcc: xrgb8888,
                                   modifier: modifier, flags: .yZeroTop)
        return (pixels, fd, buffer)
    }

    @Test func scanout2CarriesTheModifierAndThePeerSeesThePixels() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (pixels, fd, buffer) = try Self.frame("vgpu-dmabuf-s2", seed: 7, modifier: 0x0100_0000_0000_0001)
        defer { try? fd.close() }

        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0] != nil })
        let got = try #require(pair.peer.state.dmabufScanouts[0])
        #expect(got.request == .dmabufScanout2)
        #expect(got.modifier == 0x0100_0000_0000_0001)
        #expect(got.rect == Self.full)
        #expect((got.scanout.fdWidth, got.scanout.fdHeight, got.scanout.fdStride) == (UInt32(Self.w), UInt32(Self.h), UInt32(Self.stride)))
        #expect(got.scanout.fdFlags == DisplayDMABuf.Flags.yZeroTop.rawValue)
        #expect(UInt32(bitPattern: got.scanout.fourcc) == xrgb8888)
        #expect(got.fileID == PeerDMABuf.FileID(fd: fd.rawValue))
        #expect(got.isEnabled && got.fd != fd.rawValue) // the peer's own duplicate
        #expect(pair.peer.state.enabledFeatures == [.edid, .dmabuf2])

        let fb = try #require(pair.peer.dmabufFramebuffer(scanout: 0))
        expectSamePixels(fb.pixels, packed(pixels, stride: Self.stride, rect: Self.full))

        // The sender's later writes show through the peer's mapping: one buffer, no copy.
        let second = pixelPattern(width: Self.w, height: Self.h, stride: Self.stride, seed: 99)
        _ = try fd.writeAll(toAbsoluteOffset: 0, second)
        expectSamePixels(pair.peer.dmabufFramebuffer(scanout: 0)?.pixels, packed(second, stride: Self.stride, rect: Self.full))
        #expect(pair.peer.state.errors.isEmpty)
    }

    @Test func subRectIsWhatTheScanoutShows() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (pixels, fd, buffer) = try Self.frame("vgpu-dmabuf-sub", seed: 3)
        defer { try? fd.close() }
        let rect = PixelRect(x: 5, y: 3, width: 20, height: 9)
        #expect(pair.display.scanoutDMABuf(0, rect: rect, buffer: buffer))
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0] != nil })
        #expect(pair.peer.state.dmabufScanouts[0]?.rect == rect)
        expectSamePixels(pair.peer.dmabufFramebuffer(scanout: 0)?.pixels, packed(pixels, stride: Self.stride, rect: rect))
    }

    @Test func plainScanoutWithoutDMABUF2() throws {
        // Either side may lack DMABUF2: this side not supporting it, or QEMU not offering it.
        var noOffer = DisplayChannelPeer.Configuration()
        noOffer.offeredFeatures = [.edid]
        for (peerConfig, options) in [(DisplayChannelPeer.Configuration(), VhostUserGPUDisplay.Options(supportedFeatures: [.edid])),
                                      (noOffer, VhostUserGPUDisplay.Options())] {
            let pair = try Pair(peer: peerConfig, options: options)
            defer { pair.close() }
            let (pixels, fd, buffer) = try Self.frame("vgpu-dmabuf-s1", seed: 11)
            defer { try? fd.close() }

            // Not expressible without DMABUF2: refused, nothing sent.
            var tiled = buffer
            tiled.modifier = 0x0100_0000_0000_0001
            #expect(!pair.display.scanoutDMABuf(0, rect: Self.full, buffer: tiled))

            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
            #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0] != nil })
            let got = try #require(pair.peer.state.dmabufScanouts[0])
            #expect(got.request == .dmabufScanout)
            #expect(got.modifier == nil)
            #expect(got.fileID == PeerDMABuf.FileID(fd: fd.rawValue))
            expectSamePixels(pair.peer.dmabufFramebuffer(scanout: 0)?.pixels, packed(pixels, stride: Self.stride, rect: Self.full))
            #expect(pair.peer.state.count(.dmabufScanout2) == 0)
            #expect(pair.peer.state.count(.dmabufScanout) == 1)
            #expect(pair.peer.state.fdsReceived == 1)
            #expect(pair.peer.state.errors.isEmpty)
        }
    }

    @Test func disableSendsNoFdAndThePeerDropsItsBuffer() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-off", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0]?.isEnabled == true })
        #expect(openCount(ofMemfd: "vgpu-dmabuf-off") == 2) // ours and the peer's

        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: nil))
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.count(.dmabufScanout) == 1 && $0.count(.dmabufScanout2) == 1 })
        let got = try #require(pair.peer.state.dmabufScanouts[0])
        #expect(got.request == .dmabufScanout)
        #expect(!got.isEnabled && got.fileID == nil)
        #expect(pair.peer.dmabufFramebuffer(scanout: 0) == nil)
        #expect(openCount(ofMemfd: "vgpu-dmabuf-off") == 1)
        #expect(pair.peer.state.fdsReceived == 1)
        // Nothing to flush any more.
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .failed(.noScanout))
        #expect(pair.peer.state.errors.isEmpty)
    }

    @Test func aNewBufferReplacesTheOldOneAndFdsStayWithTheirMessages() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (_, fdA, a) = try Self.frame("vgpu-dmabuf-a", seed: 1)
        defer { try? fdA.close() }
        let (pixelsB, fdB, b) = try Self.frame("vgpu-dmabuf-b", seed: 2)
        defer { try? fdB.close() }
        // Back to back, so the kernel glues fd-less messages in front of fd-carrying ones.
        for _ in 0..<50 {
            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: a))
            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: nil))
            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: b))
        }
        #expect(pair.peer.waitFor(timeout: .seconds(10)) { $0.count(.dmabufScanout2) == 100 && $0.count(.dmabufScanout) == 50 })
        #expect(pair.peer.state.dmabufScanouts[0]?.fileID == PeerDMABuf.FileID(fd: fdB.rawValue))
        expectSamePixels(pair.peer.dmabufFramebuffer(scanout: 0)?.pixels, packed(pixelsB, stride: Self.stride, rect: Self.full))
        #expect(pair.peer.state.fdsReceived == 100)
        #expect(pair.peer.state.errors.isEmpty)
        // The peer closed every buffer it replaced.
        #expect(openCount(ofMemfd: "vgpu-dmabuf-a") == 1)
        #expect(openCount(ofMemfd: "vgpu-dmabuf-b") == 2)
    }

    @Test func invalidScanoutsAreRefused() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-bad", seed: 1)
        defer { try? fd.close() }
        #expect(!pair.display.scanoutDMABuf(16, rect: Self.full, buffer: buffer))
        #expect(!pair.display.scanoutDMABuf(0, rect: PixelRect(x: 1, y: 0, width: UInt32(Self.w), height: 1), buffer: buffer))
        #expect(!pair.display.scanoutDMABuf(0, rect: PixelRect(x: 0, y: 0, width: 0, height: 0), buffer: buffer))
        var closed = buffer
        closed.fd = FileDescriptor(rawValue: -1)
        #expect(!pair.display.scanoutDMABuf(0, rect: Self.full, buffer: closed))
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .failed(.noScanout))
        #expect(pair.display.updateDMABuf(16, rect: Self.full) == .failed(.noScanout))
        #expect(pair.display.displayInfo() != nil) // round trip: everything before it has arrived
        #expect(pair.peer.state.count(.dmabufScanout) + pair.peer.state.count(.dmabufScanout2) == 0)
        #expect(!pair.display.isBroken)
    }

    @Test func updateWaitsForTheFlushReply() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-upd", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        let rect = PixelRect(x: 1, y: 2, width: 3, height: 4)
        #expect(pair.display.updateDMABuf(0, rect: rect) == .flushed)
        // The reply came after the peer saw the request.
        #expect(pair.peer.state.dmabufUpdates == [DisplayUpdateHeader(scanoutID: 0, rect: rect)])
        for _ in 0..<200 {
            #expect(pair.display.updateDMABuf(0, rect: Self.full) == .flushed)
        }
        #expect(pair.peer.state.dmabufUpdateReplies == 201)
        #expect(pair.peer.state.errors.isEmpty)
        #expect(!pair.display.isBroken)
    }

    @Test func unansweredUpdateTimesOutWithinTheBound() throws {
        var config = DisplayChannelPeer.Configuration()
        config.replyToDMABufUpdate = false
        let pair = try Pair(peer: config, options: .init(dmabufUpdateTimeout: .milliseconds(300)))
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-noreply", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        let start = ContinuousClock.now
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .timedOut)
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(250))
        #expect(elapsed < .seconds(3))
        #expect(pair.peer.state.dmabufUpdates.count == 1)
        // Still owed, but the channel stays in step for other replies.
        #expect(!pair.display.isBroken)
        #expect(pair.display.displayInfo() != nil)
        #expect(pair.display.edid(scanout: 0) == DisplayChannelPeer.sampleEDID)
        #expect(!pair.display.isBroken)
    }

    @Test func lateReplyIsDroppedAndTheNextUpdateGetsItsOwn() throws {
        let pair = try Pair(options: .init(dmabufUpdateTimeout: .milliseconds(200)))
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-late", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        // Like QEMU whose GL display has not flushed yet.
        pair.peer.setDMABufUpdateReplies(.hold)
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .timedOut)
        // A reply to a later request may overtake the owed one.
        #expect(pair.display.displayInfo() != nil)
        pair.peer.setDMABufUpdateReplies(.answer)
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufUpdateReplies == 1 })
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .flushed)
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .flushed)
        #expect(pair.peer.state.dmabufUpdateReplies == 3)
        #expect(!pair.display.isBroken)
    }

    @Test func stalledPeerTimesOutTheUpdate() throws {
        let pair = try Pair(options: .init(dmabufUpdateTimeout: .milliseconds(200)))
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-stall", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0] != nil })
        pair.peer.stall()
        usleep(100_000) // the reader thread sees the stall asynchronously
        let start = ContinuousClock.now
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .timedOut)
        #expect(ContinuousClock.now - start < .seconds(3))
        pair.peer.unstall()
        // QEMU answers once it reads again; that late reply is dropped, the next one is ours.
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufUpdateReplies == 1 })
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .flushed)
        #expect(!pair.display.isBroken)
    }

    @Test func interruptEndsAnUpdateWait() throws {
        let pair = try Pair(options: .init(dmabufUpdateTimeout: .seconds(60)))
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-intr", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        pair.peer.setDMABufUpdateReplies(.hold)
        let display = pair.display
        let result = Mutex<DMABufUpdateResult?>(nil)
        let worker = try Background { let r = display.updateDMABuf(0, rect: Self.full); result.withLock { $0 = r } }
        #expect(worker.isStuck())
        #expect(worker.freed { display.interrupt() } < .seconds(2))
        #expect(result.withLock { $0 } == .failed(.interrupted))
        // While interrupted nothing is sent or waited for.
        #expect(display.updateDMABuf(0, rect: Self.full) == .failed(.interrupted))
        display.resume()
        pair.peer.setDMABufUpdateReplies(.answer)
        #expect(display.updateDMABuf(0, rect: Self.full) == .flushed)
        #expect(!display.isBroken)
    }

    @Test func closedPeerFailsWithoutCrashOrHang() throws {
        let pair = try Pair(options: .init(timeout: .seconds(60), dmabufUpdateTimeout: .seconds(60)))
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-gone", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        #expect(pair.display.updateDMABuf(0, rect: Self.full) == .flushed)

        // QEMU goes away in the middle of a wait.
        pair.peer.setDMABufUpdateReplies(.hold)
        let display = pair.display
        let result = Mutex<DMABufUpdateResult?>(nil)
        let worker = try Background { let r = display.updateDMABuf(0, rect: Self.full); result.withLock { $0 = r } }
        #expect(worker.isStuck())
        #expect(worker.freed { pair.peer.close() } < .seconds(2))
        #expect(result.withLock { $0 } == .failed(.disconnected))
        #expect(display.isBroken)

        // Everything after fails at once (no SIGPIPE, no wait).
        let after = ContinuousClock.now
        #expect(display.updateDMABuf(0, rect: Self.full) == .failed(.disconnected))
        #expect(!display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        #expect(!display.scanoutDMABuf(0, rect: Self.full, buffer: nil))
        #expect(ContinuousClock.now - after < .milliseconds(500))
    }

    @Test func peerClosedBeforeTheUpdate() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (_, fd, buffer) = try Self.frame("vgpu-dmabuf-gone2", seed: 1)
        defer { try? fd.close() }
        #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: buffer))
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0] != nil })
        pair.peer.close()
        let start = ContinuousClock.now
        let result = pair.display.updateDMABuf(0, rect: Self.full)
        #expect(result == .failed(.disconnected))
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(pair.display.isBroken)
    }

    @Test func noFdLeaks() throws {
        let before = openFDSet()
        do {
            let pair = try Pair(options: .init(dmabufUpdateTimeout: .milliseconds(100)))
            let (_, fdA, a) = try Self.frame("vgpu-dmabuf-leak-a", seed: 1)
            let (_, fdB, b) = try Self.frame("vgpu-dmabuf-leak-b", seed: 2)
            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: a))
            #expect(pair.display.updateDMABuf(0, rect: Self.full) == .flushed)
            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: b))
            #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.fdsReceived == 2 })
            #expect(pair.peer.dmabufFramebuffer(scanout: 0) != nil)
            pair.peer.setDMABufUpdateReplies(.drop)
            #expect(pair.display.updateDMABuf(0, rect: Self.full) == .timedOut)
            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: nil))
            #expect(pair.display.scanoutDMABuf(0, rect: Self.full, buffer: a)) // the peer still holds this one at close
            #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.fdsReceived == 3 })
            pair.close()
            try fdA.close()
            try fdB.close()
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }
}

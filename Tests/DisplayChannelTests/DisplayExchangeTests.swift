import FrontendSide
import CShims
import Glibc
import SystemPackage
import Testing

@testable import DisplayChannel
import SystemSupport
import VGPUTestSupport

/// A backend display and a QEMU-like peer over a real socket pair.
struct Pair {
    let display: VhostUserGPUDisplay
    let peer: DisplayChannelPeer
    /// The display's end of the socket (owned by `display`; for SIOCOUTQ).
    let displayFD: Int32

    init(peer configuration: DisplayChannelPeer.Configuration = .init(),
         options: VhostUserGPUDisplay.Options = .init()) throws {
        let (peer, socket) = try DisplayChannelPeer.connected(configuration: configuration)
        self.peer = peer
        displayFD = socket.rawValue
        display = try VhostUserGPUDisplay(socket: socket, options: options)
    }

    func close() {
        display.close()
        peer.close()
    }
}

/// The rect of `source` (rows `stride` apart) as packed rows.
func packed(_ source: [UInt8], stride: Int, rect: PixelRect) -> [UInt8] {
    var out: [UInt8] = []
    for row in 0..<Int(rect.height) {
        let o = (Int(rect.y) + row) * stride + Int(rect.x) * 4
        out += source[o..<o + Int(rect.width) * 4]
    }
    return out
}

extension VhostUserGPUDisplay {
    /// Sends the `rect` of `frame` (a whole surface, rows `stride` apart).
    func update(scanout: UInt32, rect: PixelRect, frame: [UInt8], stride: Int) {
        frame.withUnsafeBytes { raw in
            update(scanout: scanout, rect: rect, pixels: raw.baseAddress! + Int(rect.y) * stride + Int(rect.x) * 4,
                   stride: stride)
        }
    }
}

@Suite("Display channel exchange over a socket pair")
struct DisplayExchangeTests {
    @Test func negotiatesFeaturesAndReadsDisplayInfo() throws {
        var config = DisplayChannelPeer.Configuration()
        config.heads = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1024, height: 768), enabled: true),
                        DisplayMode(rect: PixelRect(x: 1024, y: 0, width: 640, height: 480), enabled: true, flags: 1)]
        let pair = try Pair(peer: config)
        defer { pair.close() }

        let modes = try #require(pair.display.displayInfo())
        #expect(modes.count == 16)
        #expect(Array(modes.prefix(2)) == config.heads)
        #expect(modes[2].enabled == false)
        #expect(pair.display.protocolFeatures == [.edid, .dmabuf2])
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.enabledFeatures == [.edid, .dmabuf2] })
        let log = pair.peer.state.log
        #expect(log.first == .getProtocolFeatures)
        #expect(log.contains(.setProtocolFeatures))
        #expect(pair.peer.state.errors.isEmpty)
        #expect(!pair.display.isBroken)
    }

    @Test func enablesDMABUF2OnlyWhenSupported() throws {
        let pair = try Pair(options: .init(supportedFeatures: [.edid]))
        defer { pair.close() }
        #expect(pair.display.edid(scanout: 0) != nil)
        #expect(pair.display.protocolFeatures == [.edid])
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.enabledFeatures == [.edid] })
    }

    @Test func featureExchangeFinishesOnTheHotPathWithoutWaiting() throws {
        let pair = try Pair()
        defer { pair.close() }
        // Give QEMU's reply time to arrive, then a plain send picks it up without blocking.
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.count(.getProtocolFeatures) == 1 })
        usleep(20_000)
        pair.display.cursorMove(scanout: 0, x: 1, y: 1)
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.enabledFeatures == [.edid, .dmabuf2] })
        #expect(pair.display.protocolFeatures == [.edid, .dmabuf2])
    }

    @Test func edidComesFromThePeer() throws {
        var config = DisplayChannelPeer.Configuration()
        config.edid = (0..<256).map { UInt8($0) }
        let pair = try Pair(peer: config)
        defer { pair.close() }
        #expect(pair.display.edid(scanout: 0) == config.edid)
        #expect(pair.peer.state.errors.isEmpty)
    }

    @Test func edidIsNilWithoutTheFeature() throws {
        var config = DisplayChannelPeer.Configuration()
        config.offeredFeatures = []
        let pair = try Pair(peer: config)
        defer { pair.close() }
        #expect(pair.display.edid(scanout: 0) == nil)
        #expect(pair.display.protocolFeatures == [])
        #expect(pair.peer.state.count(.getEDID) == 0)
        #expect(!pair.display.isBroken)
    }

    @Test func edidForAnUnansweredScanoutReturnsAtOnce() throws {
        // QEMU never answers GET_EDID for a scanout id >= max_outputs.
        let pair = try Pair(options: .init(timeout: .seconds(30)))
        defer { pair.close() }
        let start = ContinuousClock.now
        #expect(pair.display.edid(scanout: 3) == nil)
        #expect(ContinuousClock.now - start < .seconds(5))
        #expect(!pair.display.isBroken)
        // The channel stays in step: later replies still match their requests.
        #expect(pair.display.edid(scanout: 0) == DisplayChannelPeer.sampleEDID)
        #expect(pair.display.displayInfo() != nil)
        #expect(pair.display.edid(scanout: 0) == DisplayChannelPeer.sampleEDID)
    }

    @Test(arguments: [0, 64])
    func scanoutAndFullUpdateArriveExactly(padding: Int) throws {
        let pair = try Pair()
        defer { pair.close() }
        let (w, h) = (97, 61)
        let stride = w * 4 + padding
        let frame = pixelPattern(width: w, height: h, stride: stride)
        pair.display.setScanout(0, width: UInt32(w), height: UInt32(h))
        let rect = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        pair.display.update(scanout: 0, rect: rect, frame: frame, stride: stride)
        #expect(pair.peer.waitFor(timeout: .seconds(10)) { $0.updateFrames == 1 })
        let fb = try #require(pair.peer.state.framebuffers[0])
        #expect(fb.width == UInt32(w) && fb.height == UInt32(h))
        #expect(fb.pixels == packed(frame, stride: stride, rect: rect))
        #expect(pair.peer.state.errors.isEmpty)
    }

    @Test(arguments: [0, 24])
    func partialRectUpdatesLandInPlace(padding: Int) throws {
        let pair = try Pair()
        defer { pair.close() }
        let (w, h) = (64, 48)
        let stride = w * 4 + padding
        let first = pixelPattern(width: w, height: h, stride: stride, seed: 1)
        let second = pixelPattern(width: w, height: h, stride: stride, seed: 99)
        pair.display.setScanout(0, width: UInt32(w), height: UInt32(h))
        let all = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        pair.display.update(scanout: 0, rect: all, frame: first, stride: stride)
        let part = PixelRect(x: 10, y: 5, width: 20, height: 7)
        pair.display.update(scanout: 0, rect: part, frame: second, stride: stride)
        #expect(pair.peer.waitFor(timeout: .seconds(10)) { $0.updateFrames == 2 })
        let fb = try #require(pair.peer.state.framebuffers[0])
        for y in 0..<h {
            for x in 0..<w {
                let inPart = x >= 10 && x < 30 && y >= 5 && y < 12
                let src = inPart ? second : first
                let o = y * stride + x * 4
                let expected = UInt32(src[o]) | UInt32(src[o + 1]) << 8 | UInt32(src[o + 2]) << 16 | UInt32(src[o + 3]) << 24
                if fb.pixel(x: x, y: y) != expected {
                    Issue.record("pixel (\(x), \(y)) differs")
                    return
                }
            }
        }
    }

    @Test func stridedUpdateWithMoreRowsThanIOVMax() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (w, h) = (3, 2500)
        let stride = 32
        let frame = pixelPattern(width: w, height: h, stride: stride)
        pair.display.setScanout(0, width: UInt32(w), height: UInt32(h))
        let rect = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        pair.display.update(scanout: 0, rect: rect, frame: frame, stride: stride)
        pair.display.cursorMove(scanout: 0, x: 1, y: 2)
        #expect(pair.peer.waitFor(timeout: .seconds(10)) { $0.count(.cursorPos) == 1 })
        #expect(pair.peer.state.framebuffers[0]?.pixels == packed(frame, stride: stride, rect: rect))
        #expect(pair.peer.state.errors.isEmpty)
    }

    @Test func bigFrameSurvivesPartialWrites() throws {
        let pair = try Pair()
        defer { pair.close() }
        let (w, h) = (1280, 800)
        let frame = pixelPattern(width: w, height: h, stride: w * 4)
        pair.display.setScanout(0, width: UInt32(w), height: UInt32(h))
        let rect = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        for _ in 0..<3 { pair.display.update(scanout: 0, rect: rect, frame: frame, stride: w * 4) }
        #expect(pair.peer.waitFor(timeout: .seconds(20)) { $0.updateFrames == 3 })
        #expect(pair.peer.state.framebuffers[0]?.pixels == frame)
        #expect(pair.peer.state.errors.isEmpty)
        #expect(!pair.display.isBroken)
    }

    @Test func updateWithoutSurfaceIsNotSent() throws {
        let pair = try Pair()
        defer { pair.close() }
        let frame = pixelPattern(width: 4, height: 4, stride: 16)
        let rect = PixelRect(x: 0, y: 0, width: 4, height: 4)
        pair.display.update(scanout: 0, rect: rect, frame: frame, stride: 16)
        pair.display.setScanout(0, width: 4, height: 4)
        pair.display.setScanout(0, width: 0, height: 0)
        pair.display.update(scanout: 0, rect: rect, frame: frame, stride: 16)
        pair.display.cursorHide(scanout: 0)
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.count(.cursorPosHide) == 1 })
        #expect(pair.peer.state.count(.update) == 0)
        #expect(pair.peer.state.count(.scanout) == 2)
        #expect(pair.peer.state.framebuffers[0] == nil)
        #expect(pair.peer.state.errors.isEmpty)
    }

    @Test func cursorMessages() throws {
        let pair = try Pair()
        defer { pair.close() }
        cursorImage.withUnsafeBytes { pair.display.cursorUpdate(scanout: 0, x: 5, y: 6, hotX: 7, hotY: 8, pixels: $0.baseAddress!) }
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.cursorUpdates == 1 })
        var cursor = pair.peer.state.cursor
        #expect(cursor.image == cursorImage)
        #expect((cursor.x, cursor.y, cursor.hotX, cursor.hotY, cursor.visible) == (5, 6, 7, 8, true))
        pair.display.cursorMove(scanout: 0, x: 100, y: 200)
        pair.display.cursorHide(scanout: 0)
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.count(.cursorPosHide) == 1 })
        cursor = pair.peer.state.cursor
        #expect(cursor.visible == false)
        #expect((cursor.x, cursor.y) == (100, 200)) // hidden where it was
        let cursorKinds: Set<DisplayRequest> = [.cursorUpdate, .cursorPos, .cursorPosHide]
        #expect(pair.peer.state.log.filter(cursorKinds.contains) == [.cursorUpdate, .cursorPos, .cursorPosHide])
        #expect(pair.peer.state.errors.isEmpty)
    }

    @Test func twoThreadsNeverInterleaveMessages() async throws {
        let pair = try Pair()
        defer { pair.close() }
        let (w, h) = (200, 150)
        let stride = w * 4 + 12
        let frame = pixelPattern(width: w, height: h, stride: stride)
        pair.display.setScanout(0, width: UInt32(w), height: UInt32(h))
        let display = pair.display
        let rect = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for _ in 0..<20 { display.update(scanout: 0, rect: rect, frame: frame, stride: stride) }
            }
            group.addTask {
                for i in 0..<500 { display.cursorMove(scanout: 0, x: UInt32(i), y: 1) }
            }
        }
        #expect(pair.peer.waitFor(timeout: .seconds(20)) { $0.updateFrames == 20 && $0.count(.cursorPos) == 500 })
        #expect(pair.peer.state.framebuffers[0]?.pixels == packed(frame, stride: stride, rect: rect))
        #expect(pair.peer.state.errors.isEmpty)
        #expect(!pair.peer.state.desynchronized)
    }

    @Test func countingPeerCountsWithoutStoring() throws {
        var config = DisplayChannelPeer.Configuration()
        config.storePixels = false
        config.recordLog = false
        let pair = try Pair(peer: config)
        defer { pair.close() }
        let (w, h) = (320, 200)
        let frame = pixelPattern(width: w, height: h, stride: w * 4)
        pair.display.setScanout(0, width: UInt32(w), height: UInt32(h))
        for _ in 0..<10 {
            pair.display.update(scanout: 0, rect: PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h)),
                                frame: frame, stride: w * 4)
        }
        #expect(pair.peer.waitFor(timeout: .seconds(10)) { $0.updateFrames == 10 })
        #expect(pair.peer.state.updatePixelBytes == 10 * w * h * 4)
        #expect(pair.peer.state.log.isEmpty)
        #expect(pair.peer.state.errors.isEmpty)
    }
}

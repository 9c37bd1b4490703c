#if canImport(Glibc)
import Glibc
#endif
import CShims
import DisplayChannel
import Testing
import FrontendSide
import VirtioGPU
import SystemSupport
import VGPUTestSupport

/// The 2D path end to end: guest RAM → TRANSFER_TO_HOST_2D → host copy → RESOURCE_FLUSH →
/// display channel → pixels as QEMU would show them.
@Suite(.serialized) struct Display2DTests {
    /// (B, G, R) that a source pixel of `format` must show as.
    static func bgr(_ format: UInt32, _ p: ArraySlice<UInt8>) -> [UInt8] {
        let b = p.startIndex
        switch format {
        case VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM.rawValue, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue: return [p[b], p[b + 1], p[b + 2]]
        case VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM.rawValue, VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM.rawValue: return [p[b + 3], p[b + 2], p[b + 1]]
        case VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM.rawValue, VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM.rawValue: return [p[b + 2], p[b + 1], p[b]]
        default: return [p[b + 1], p[b + 2], p[b + 3]]   // A8B8G8R8, X8B8G8R8
        }
    }

    static let formats: [UInt32] = [
        VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM,
        VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM,
        VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM,
    ].map(\.rawValue)

    @Test func displayInfoComesFromQEMUsDisplay() throws {
        var pc = DisplayChannelPeer.Configuration()
        pc.heads = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1024, height: 600), enabled: true)]
        let rig = try GPURig(peerConfig: pc)
        let r = try rig.driver.getDisplayInfo()
        #expect(r.type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
        let info = try #require(r.load(virtio_gpu_resp_display_info.self))
        #expect(info.pmodes.0.r.width == 1024 && info.pmodes.0.r.height == 600 && info.pmodes.0.enabled == 1)
        #expect(info.pmodes.1.enabled == 0)
    }

    @Test func edidComesFromQEMUWhenOffered() throws {
        let rig = try GPURig()
        let r = try rig.driver.getEDID(scanout: 0)
        #expect(r.type == VIRTIO_GPU_RESP_OK_EDID.rawValue)
        let e = try #require(r.load(virtio_gpu_resp_edid.self))
        let blob = withUnsafeBytes(of: e.edid) { Array($0.prefix(Int(e.size))) }
        #expect(blob == DisplayChannelPeer.sampleEDID)
    }

    @Test func edidIsGeneratedWhenQEMUHasNone() throws {
        var pc = DisplayChannelPeer.Configuration()
        pc.offeredFeatures = []
        let rig = try GPURig(peerConfig: pc)
        let e = try #require(try rig.driver.getEDID(scanout: 0).load(virtio_gpu_resp_edid.self))
        let blob = withUnsafeBytes(of: e.edid) { Array($0.prefix(Int(e.size))) }
        #expect(blob.count >= 128)
        #expect(Array(blob.prefix(8)) == [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0])
        #expect(blob.prefix(128).reduce(0) { ($0 + Int($1)) & 0xff } == 0)   // checksum
    }

    @Test(arguments: formats)
    func flushShowsEveryFormatAsXRGB(format: UInt32) throws {
        let rig = try GPURig()
        let (w, h) = (37, 23)   // odd sizes: no accidental alignment
        let src = pixelPattern(w, h, seed: format & 0xff)
        _ = try rig.makeResource(id: 7, format: format, width: UInt32(w), height: UInt32(h), pixels: src)
        try rig.check(rig.driver.setScanout(0, id: 7, rect: VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))), "set_scanout")
        try rig.check(rig.driver.flush(id: 7, rect: VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))), "flush")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.framebuffers[0]?.width == UInt32(w) && $0.updateFrames >= 1 })
        let fb = try #require(rig.peer.state.framebuffers[0])
        for y in 0..<h { for x in 0..<w {
            let i = (y * w + x) * 4
            let got = Array(fb.pixels[i..<i + 3])
            let want = Self.bgr(format, src[i..<i + 4])
            if got != want { Issue.record("format \(format) pixel (\(x),\(y)): got \(got) want \(want)"); return }
        } }
    }

    @Test func transferHonoursOffsetAndRectAcrossBackingEntries() throws {
        let rig = try GPURig()
        let (w, h) = (64, 32)
        let stride = w * 4
        // Backing in three pieces of odd lengths, so rows straddle entries.
        let image = pixelPattern(w, h, seed: 9)
        let cuts = [0, 1000, 5000, image.count]
        var entries: [(GuestPhysicalAddressAlias, UInt32)] = []
        for k in 0..<3 { entries.append((rig.place(Array(image[cuts[k]..<cuts[k + 1]])), UInt32(cuts[k + 1] - cuts[k]))) }
        try rig.check(rig.driver.createResource2D(id: 3, width: UInt32(w), height: UInt32(h)), "create")
        try rig.check(rig.driver.attachBacking(id: 3, entries: entries), "attach")
        try rig.check(rig.driver.setScanout(0, id: 3, rect: VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))), "scanout")
        // Sub-rect 10x5 at (20, 7); offset points at its first pixel in the backing, as Linux sends it.
        let rect = VirtioGPUDriver.rect(20, 7, 10, 5)
        try rig.check(rig.driver.transferToHost2D(id: 3, rect: rect, offset: UInt64(7 * stride + 20 * 4)), "transfer")
        try rig.check(rig.driver.flush(id: 3, rect: VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))), "flush")
        // SET_SCANOUT's own full update (black: nothing transferred yet), then the flush; the
        // mailbox may send only the newest of the two.
        func matches(_ pixels: [UInt8]) -> (Int, Int, Bool)? {
            for y in 0..<h { for x in 0..<w {
                let i = (y * w + x) * 4
                let inside = (20..<30).contains(x) && (7..<12).contains(y)
                let want: [UInt8] = inside ? Array(image[i..<i + 3]) : [0, 0, 0]
                if Array(pixels[i..<i + 3]) != want { return (x, y, inside) }
            } }
            return nil
        }
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { s in s.framebuffers[0].map { $0.pixels.count == w * h * 4 && matches($0.pixels) == nil } ?? false })
        let fb = try #require(rig.peer.state.framebuffers[0])
        if let (x, y, inside) = matches(fb.pixels) { Issue.record("pixel (\(x),\(y)) inside=\(inside)") }
    }

    @Test func partialFlushSendsOnlyTheRect() throws {
        let rig = try GPURig()
        _ = try rig.makeResource(id: 1, width: 100, height: 50, pixels: pixelPattern(100, 50))
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, 100, 50)), "scanout")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.updateFrames >= 1 })   // SET_SCANOUT's full update
        let before = rig.peer.state.updatePixelBytes
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(10, 10, 8, 4)), "flush")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.updatePixelBytes - before == 8 * 4 * 4 })
    }

    @Test func twoScanoutsShowTheirOwnResources() throws {
        var pc = DisplayChannelPeer.Configuration()
        pc.maxOutputs = 2
        pc.heads = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: 640, height: 480), enabled: true),
                    DisplayMode(rect: PixelRect(x: 640, y: 0, width: 320, height: 200), enabled: true)]
        let rig = try GPURig(peerConfig: pc)
        _ = try rig.makeResource(id: 1, width: 16, height: 8, pixels: [UInt8](repeating: 0x11, count: 16 * 8 * 4))
        _ = try rig.makeResource(id: 2, width: 8, height: 4, pixels: [UInt8](repeating: 0x22, count: 8 * 4 * 4))
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, 16, 8)), "scanout 0")
        try rig.check(rig.driver.setScanout(1, id: 2, rect: VirtioGPUDriver.rect(0, 0, 8, 4)), "scanout 1")
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, 16, 8)), "flush 1")
        try rig.check(rig.driver.flush(id: 2, rect: VirtioGPUDriver.rect(0, 0, 8, 4)), "flush 2")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.framebuffers[0]?.pixels.first == 0x11 && $0.framebuffers[1]?.pixels.first == 0x22 })
        // Disable scanout 1 with resource 0.
        try rig.check(rig.driver.setScanout(1, id: 0, rect: VirtioGPUDriver.rect(0, 0, 0, 0)), "disable")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { ($0.framebuffers[1]?.width ?? 0) == 0 })
    }

    @Test func cursorUpdateMoveAndHide() throws {
        let rig = try GPURig()
        var image = [UInt8](repeating: 0, count: 64 * 64 * 4)
        image[0] = 0xaa; image[1] = 0xbb; image[2] = 0xcc; image[3] = 0xff
        _ = try rig.makeResource(id: 5, format: VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM.rawValue, width: 64, height: 64, pixels: image)
        _ = try rig.driver.updateCursor(scanout: 0, id: 5, x: 100, y: 50, hotX: 3, hotY: 4)
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.cursor.image != nil && $0.cursor.x == 100 && $0.cursor.y == 50 })
        let c = rig.peer.state.cursor
        #expect(c.hotX == 3 && c.hotY == 4)
        #expect(Array(c.image!.prefix(4)) == [0xaa, 0xbb, 0xcc, 0xff])
        _ = try rig.driver.updateCursor(scanout: 0, id: 5, x: 7, y: 9, move: true)
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.cursor.x == 7 && $0.cursor.y == 9 && $0.cursor.visible })
        _ = try rig.driver.updateCursor(scanout: 0, id: 0, x: 0, y: 0)
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { !$0.cursor.visible })
    }

    @Test func aGuestWritingRightAfterTheFlushResponseDoesNotTearTheFrame() throws {
        let rig = try GPURig()
        let (w, h) = (320, 240)
        let first = pixelPattern(w, h, seed: 1), second = pixelPattern(w, h, seed: 2)
        let backing = try rig.makeResource(id: 1, width: UInt32(w), height: UInt32(h), pixels: first)
        let whole = VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))
        try rig.check(rig.driver.setScanout(0, id: 1, rect: whole), "scanout")
        try rig.check(rig.driver.flush(id: 1, rect: whole, fence: 7), "flush")
        // At once, as a guest reusing its buffer: new pixels in guest RAM and in the host copy,
        // with no flush. The display must show the flushed frame, whole and untorn.
        rig.driver.ram.write(second, at: backing)
        try rig.check(rig.driver.transferToHost2D(id: 1, rect: whole), "transfer")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.framebuffers[0]?.pixels.count == w * h * 4 && $0.updateFrames >= 1 })
        // Let any frame still in the mailbox out, then look.
        usleep(200_000)
        let shown = try #require(rig.peer.state.framebuffers[0]).pixels
        #expect(shown == first.enumerated().map { $0.offset % 4 == 3 ? shown[$0.offset] : $0.element })
    }

    @Test func rapidFlipsBetweenTwoResourcesEndOnTheLastFrame() throws {
        let rig = try GPURig()
        let (w, h) = (256, 192)
        let whole = VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))
        let a = try rig.makeResource(id: 1, width: UInt32(w), height: UInt32(h), pixels: pixelPattern(w, h, seed: 0))
        let b = try rig.makeResource(id: 2, width: UInt32(w), height: UInt32(h), pixels: pixelPattern(w, h, seed: 0))
        var last: [UInt8] = []
        for k in 0..<40 {
            let (id, backing): (UInt32, GuestPhysicalAddressAlias) = k % 2 == 0 ? (1, a) : (2, b)
            last = pixelPattern(w, h, seed: UInt32(10 + k))
            rig.driver.ram.write(last, at: backing)
            try rig.check(rig.driver.transferToHost2D(id: id, rect: whole), "transfer \(k)")
            try rig.check(rig.driver.setScanout(0, id: id, rect: whole), "scanout \(k)")
            try rig.check(rig.driver.flush(id: id, rect: whole, fence: UInt64(k + 1)), "flush \(k)")
        }
        #expect(rig.headShows(last), "the display must end on the last flushed frame")
    }

    @Test func fencedCommandEchoesTheFence() throws {
        let rig = try GPURig()
        _ = try rig.makeResource(id: 1, width: 4, height: 4, pixels: pixelPattern(4, 4))
        let r = try rig.driver.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, 4, 4), fence: 0xfeed)
        #expect(r.type == OK)
        #expect(r.header.flags & UInt32(VIRTIO_GPU_FLAG_FENCE) != 0)
        #expect(r.header.fence_id == 0xfeed)
    }
}

typealias GuestPhysicalAddressAlias = VirtioCore.GuestPhysicalAddress
import VirtioCore

/// QEMU stops the device on a VM pause and hands over a new display socket on resume.
@Suite(.serialized) struct DisplayRestartTests {
    @Test func newDisplayChannelGetsTheHeadsWithoutAGuestCommand() throws {
        let rig = try GPURig()
        let pixels = pixelPattern(32, 16, seed: 3)
        _ = try rig.makeResource(id: 1, width: 32, height: 16, pixels: pixels)
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, 32, 16)), "scanout")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.updateFrames >= 1 })
        // Resume: QEMU's new display end, no guest command in between.
        let (second, fd) = try DisplayChannelPeer.connected()
        try rig.driver.frontend.gpuSetSocket(fd.rawValue)
        try fd.close()
        #expect(second.waitFor(timeout: .seconds(5)) { $0.framebuffers[0]?.width == 32 && $0.updateFrames >= 1 })
        let fb = try #require(second.state.framebuffers[0])
        #expect(Array(fb.pixels[0..<3]) == Array(pixels[0..<3]))
        #expect(Array(fb.pixels[(32 * 16 - 1) * 4..<(32 * 16 - 1) * 4 + 3]) == Array(pixels[(32 * 16 - 1) * 4..<(32 * 16 - 1) * 4 + 3]))
    }
}

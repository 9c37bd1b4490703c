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

/// The display mailbox reads a flushed rect from the host copy when it sends (deferred
/// updates), and small host copies are reused after UNREF: what the display and consumers may
/// see stays what was flushed and what belongs to them.
@Suite(.serialized) struct DeferredDisplayTests {
    /// Pixels (B, G, R) of `rect` in a packed w-wide image.
    static func bgr(_ p: [UInt8], width w: Int, x0: Int, y0: Int, x1: Int, y1: Int) -> [UInt8] {
        var out: [UInt8] = []
        for y in y0..<y1 { for x in x0..<x1 { let i = (y * w + x) * 4; out += [p[i], p[i + 1], p[i + 2]] } }
        return out
    }

    @Test func contentTransferredButNotFlushedNeverReachesTheDisplay() throws {
        let rig = try GPURig()
        let (w, h) = (64, 32)
        let first = pixelPattern(w, h, seed: 1), second = pixelPattern(w, h, seed: 77)
        let backing = try rig.makeResource(id: 1, width: UInt32(w), height: UInt32(h), pixels: first)
        let whole = VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))
        try rig.check(rig.driver.setScanout(0, id: 1, rect: whole), "scanout")
        try rig.check(rig.driver.flush(id: 1, rect: whole), "flush")
        // New pixels for the whole resource, transferred; only the left half is flushed, twice
        // with different rects (the second flush must not widen what is read to their union).
        rig.driver.ram.write(second, at: backing)
        try rig.check(rig.driver.transferToHost2D(id: 1, rect: whole), "transfer")
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, 16, 32)), "flush left")
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(16, 8, 16, 8)), "flush middle")
        let wantLeft = Self.bgr(second, width: w, x0: 0, y0: 0, x1: 16, y1: 32)
        let wantMiddle = Self.bgr(second, width: w, x0: 16, y0: 8, x1: 32, y1: 16)
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { s in
            guard let p = s.framebuffers[0]?.pixels, p.count == w * h * 4 else { return false }
            return Self.bgr(p, width: w, x0: 0, y0: 0, x1: 16, y1: 32) == wantLeft
                && Self.bgr(p, width: w, x0: 16, y0: 8, x1: 32, y1: 16) == wantMiddle
        })
        usleep(100_000)   // anything still in the mailbox is out
        let shown = try #require(rig.peer.state.framebuffers[0]).pixels
        // Transferred, never flushed: the rest still shows the first frame.
        #expect(Self.bgr(shown, width: w, x0: 32, y0: 0, x1: 64, y1: 32) == Self.bgr(first, width: w, x0: 32, y0: 0, x1: 64, y1: 32))
        #expect(Self.bgr(shown, width: w, x0: 16, y0: 0, x1: 32, y1: 8) == Self.bgr(first, width: w, x0: 16, y0: 0, x1: 32, y1: 8))
        #expect(Self.bgr(shown, width: w, x0: 16, y0: 16, x1: 32, y1: 32) == Self.bgr(first, width: w, x0: 16, y0: 16, x1: 32, y1: 32))
    }

    @Test func aFloodOfTransfersAndFlushesOfOneBufferEndsOnTheLastFrameWithEveryFrameWhole() throws {
        let rig = try GPURig()
        let (w, h) = (96, 64)
        let whole = VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))
        let backing = try rig.makeResource(id: 1, width: UInt32(w), height: UInt32(h), pixels: pixelPattern(w, h, seed: 0))
        try rig.check(rig.driver.setScanout(0, id: 1, rect: whole), "scanout")
        var last: [UInt8] = []
        for k in 0..<60 {
            last = [UInt8](repeating: UInt8(k + 1), count: w * h * 4)
            rig.driver.ram.write(last, at: backing)
            try rig.check(rig.driver.transferToHost2D(id: 1, rect: whole), "transfer \(k)")
            try rig.check(rig.driver.flush(id: 1, rect: whole), "flush \(k)")
        }
        #expect(rig.headShows(last), "the display must end on the last flushed frame")
    }

    @Test func aReusedHostCopyStartsZeroedAndAHandedOutOneIsNeverReused() throws {
        let rig = try GPURig()
        let processor = rig.device.processor
        let (w, h) = (64, 64)
        _ = try rig.makeResource(id: 1, width: UInt32(w), height: UInt32(h), pixels: pixelPattern(w, h, seed: 5))
        try rig.check(rig.driver.unref(id: 1), "unref")
        // Same size: the kept host copy comes back, zeroed (a new resource is black).
        try rig.check(rig.driver.createResource2D(id: 2, width: UInt32(w), height: UInt32(h)), "create 2")
        do {
            let storage = try #require(processor.hostStorage(of: ResourceID(2)))
            #expect(UnsafeRawBufferPointer(start: storage.base, count: storage.length).allSatisfy { $0 == 0 })
        }   // no reference kept here: only the handed-out fd may stop its reuse
        // A consumer got an fd of the host copy: after UNREF it must never hold another resource.
        let (fd, _) = try processor.openHostBuffer(ResourceID(2))
        defer { close(fd) }
        try rig.check(rig.driver.unref(id: 2), "unref 2")
        let secret = pixelPattern(w, h, seed: 200)
        _ = try rig.makeResource(id: 3, width: UInt32(w), height: UInt32(h), pixels: secret)
        let size = w * h * 4
        let m = try #require(mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0))
        #expect(m != MAP_FAILED)
        defer { munmap(m, size) }
        #expect(UnsafeRawBufferPointer(start: m, count: size).allSatisfy { $0 == 0 }, "the consumer's buffer shows another resource")
    }
}

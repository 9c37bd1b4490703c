import CShims
import DisplayChannel
import Foundation
@testable import HostBuffers
import Testing
import FrontendSide
import VirtioCore
import VirtioGPU
import SystemSupport
import VGPUTestSupport

/// The 2D renderer, except that every exported resource "has a dmabuf": a duplicate of its host
/// copy's memfd labelled udmabuf. This host has no dmabuf exporter; the display socket carries
/// either fd the same way, so the dmabuf scanout policy (DMABUF_SCANOUT2 + DMABUF_UPDATE, and the
/// fall back to pixels) is tested here, and with a real udmabuf in the 6.12 VM test.
final class DMABUFStandInRenderer: GPURenderer {
    let base: Renderer2D
    init(limits: ResourceLimits) { base = Renderer2D(limits: limits) }

    func geometry(of id: ResourceID) -> ResourceGeometry? { base.geometry(of: id) }
    func createResource2D(_ id: ResourceID, format: PixelFormat, width: UInt32, height: UInt32) throws(GPUFailure) {
        try base.createResource2D(id, format: format, width: width, height: height)
    }
    func destroyResource(_ id: ResourceID) throws(GPUFailure) { try base.destroyResource(id) }
    func attachBacking(_ id: ResourceID, _ backing: BackingStore) throws(GPUFailure) { try base.attachBacking(id, backing) }
    func detachBacking(_ id: ResourceID) throws(GPUFailure) { try base.detachBacking(id) }
    func transferToHost2D(_ id: ResourceID, rect: PixelRect, offset: UInt64, memory: GuestMemory) throws(GPUFailure) {
        try base.transferToHost2D(id, rect: rect, offset: offset, memory: memory)
    }
    func withScanoutPixels(_ id: ResourceID, rect: PixelRect, _ body: (UnsafeRawPointer, Int) -> Void) throws(GPUFailure) {
        try base.withScanoutPixels(id, rect: rect, body)
    }
    func copyCursorImage(_ id: ResourceID, into destination: UnsafeMutableRawPointer) throws(GPUFailure) {
        try base.copyCursorImage(id, into: destination)
    }
    func hostStorage(of id: ResourceID) -> HostPixelStorage? { base.hostStorage(of: id) }
    func resources() -> [RendererResourceInfo] { base.resources() }
    func backingEntries(of id: ResourceID) -> [BackingEntry]? { base.backingEntries(of: id) }
    func reset() { base.reset() }
    func exportResource(_ id: ResourceID, memory: GuestMemory) -> HostBufferInfo? { base.exportResource(id, memory: memory) }
    func openHostBuffer(_ id: ResourceID) throws(GPUFailure) -> (fd: Int32, info: HostBufferInfo) { try base.openHostBuffer(id) }
    func scanoutDMABuffer(_ id: ResourceID) -> ScanoutDMABuffer? {
        guard let s = base.hostStorage(of: id), let g = base.geometry(of: id) else { return nil }
        guard let buffer = try? HostBuffer(kind: .udmabuf, fd: dup(s.fd), size: s.buffer.size, map: false) else { return nil }
        return ScanoutDMABuffer(buffer: buffer, layout: DMABufLayout(stride: g.width * 4, fourcc: g.format.drmFourCC))
    }
}

@Suite(.serialized) struct DMABUFScanoutTests {
    let w: UInt32 = 32, h: UInt32 = 16

    /// `replyBound`: how long a DMABUF_UPDATE reply is awaited; long where the peer answers,
    /// so a loaded machine never looks like a display that does not.
    func rig(dmabufScanout: Bool, replyBound: Duration = .seconds(20)) throws -> GPURig {
        var config = GPUDeviceConfig(numScanouts: 2)
        config.dmabufScanout = dmabufScanout
        return try GPURig(config: config, renderer: DMABUFStandInRenderer(limits: config.limits),
                          displayOptions: VhostUserGPUDisplay.Options(dmabufUpdateTimeout: replyBound))
    }

    @Test func scanoutAndFlushGoThroughTheDMABUF() throws {
        let rig = try rig(dmabufScanout: true)
        defer { _ = rig.disconnect() }
        let first = pixelPattern(Int(w), Int(h), seed: 3)
        _ = try rig.makeResource(id: 1, width: w, height: h, pixels: first)
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "scanout")
        // (At least one update: the device's refresh of a new display channel may add one.)
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0]?.isEnabled == true && $0.dmabufUpdates.count >= 1 })
        let shown = try #require(rig.peer.dmabufFramebuffer(scanout: 0))
        #expect(shown.width == w && shown.height == h && shown.pixels == first)
        let d = try #require(rig.peer.state.dmabufScanouts[0])
        #expect(d.request == .dmabufScanout2 && d.modifier == 0)
        #expect(d.scanout.fdStride == w * 4 && d.scanout.fourcc == Int32(bitPattern: PixelFormat.b8g8r8x8.drmFourCC))
        #expect(rig.peer.state.counts[.update, default: 0] == 0, "no pixel updates while the dmabuf shows")

        // A transfer lands in the buffer; the flush is one DMABUF_UPDATE of the flushed rect.
        let second = pixelPattern(Int(w), Int(h), seed: 4)
        let backing = rig.place(second)
        try rig.check(rig.driver.detachBacking(id: 1), "detach")
        try rig.check(rig.driver.attachBacking(id: 1, entries: [(backing, UInt32(second.count))]), "attach")
        try rig.check(rig.driver.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "transfer")
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(4, 2, 8, 8)), "flush")
        let flushed = PixelRect(x: 4, y: 2, width: 8, height: 8)
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { s in
            s.dmabufUpdates.contains { PixelRect(x: $0.x, y: $0.y, width: $0.width, height: $0.height) == flushed }
        })
        #expect(rig.peer.dmabufFramebuffer(scanout: 0)?.pixels == second)

        // Disabling the head drops the dmabuf on the display side.
        try rig.check(rig.driver.setScanout(0, id: 0, rect: VirtioGPUDriver.rect(0, 0, 0, 0)), "disable")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.dmabufScanouts[0]?.isEnabled != true })
    }

    @Test func aDisplayThatDoesNotAnswerGetsPixelsAgain() throws {
        let rig = try rig(dmabufScanout: true, replyBound: .seconds(1))
        defer { _ = rig.disconnect() }
        let first = pixelPattern(Int(w), Int(h), seed: 5)
        _ = try rig.makeResource(id: 1, width: w, height: h, pixels: first)
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "scanout")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.dmabufUpdates.count >= 1 })
        rig.peer.setDMABufUpdateReplies(.drop)
        // The flush waits out the reply bound (1 s), gives dmabuf scanout up, and shows the head
        // whole with pixels; the guest gets its response either way.
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "flush")
        // (The SCANOUT alone makes a zeroed framebuffer of that size: wait for the pixels.)
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.framebuffers[0]?.pixels == first })
        #expect(rig.peer.state.framebuffers[0]?.pixels == first)   // B8G8R8X8 is the display's own layout
        #expect(rig.peer.state.dmabufScanouts[0]?.isEnabled != true)
        // Later flushes are pixel updates; no more dmabuf traffic.
        let updates = rig.peer.state.dmabufUpdates.count
        let frames = rig.peer.state.updateFrames
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "flush")
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.updateFrames > frames })
        #expect(rig.peer.state.dmabufUpdates.count == updates)
    }

    @Test func offMeansPixelsOnly() throws {
        let rig = try rig(dmabufScanout: false)
        defer { _ = rig.disconnect() }
        let pixels = pixelPattern(Int(w), Int(h), seed: 6)
        _ = try rig.makeResource(id: 1, width: w, height: h, pixels: pixels)
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "scanout")
        try rig.check(rig.driver.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "flush")
        // The head shown with pixel updates (the mailbox may merge SET_SCANOUT's frame into the
        // flush's): B8G8R8X8 is the display's own layout.
        #expect(rig.peer.waitFor(timeout: .seconds(5)) { $0.updateFrames >= 1 && $0.framebuffers[0]?.pixels == pixels })
        #expect(rig.peer.state.dmabufScanouts.isEmpty && rig.peer.state.dmabufUpdates.isEmpty)
    }
}

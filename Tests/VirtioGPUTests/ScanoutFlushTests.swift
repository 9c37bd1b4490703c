import CShims
import DisplayChannel
import Testing
import VirtioCore
@testable import VirtioGPU

/// What the display must receive for the pattern at [x0, x0+w) × [y0, y0+h): XRGB8888 bytes
/// B,G,R,X. B8G8R8A8/X8 pass straight through (the 4th byte is whatever the guest wrote); the
/// converted formats get 0xFF there.
func expectedXRGB(_ order: String, _ x0: Int, _ y0: Int, _ w: Int, _ h: Int) -> [UInt8] {
    var out: [UInt8] = []
    for y in y0..<(y0 + h) {
        for x in x0..<(x0 + w) {
            let p = patternRGBA(x, y)
            out += [p.b, p.g, p.r, order.hasPrefix("BGR") ? p.a : 0xFF]
        }
    }
    return out
}

@Suite struct FlushFormatTests {
    @Test(arguments: formatOrders.map(\.order))
    func setScanoutAndFlushSendExactXRGB(_ order: String) throws {
        let format = try #require(formatOrders.first { $0.order == order }).format
        let h = Harness()
        h.upload(1, format, 4, 2, image: patternImage(order, 4, 2))
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 4, 2))).isOK)
        #expect(h.display.events == [
            .setScanout(0, width: 4, height: 2),
            .update(0, rect: PixelRect(x: 0, y: 0, width: 4, height: 2), stride: 16, pixels: expectedXRGB(order, 0, 0, 4, 2)),
        ])
        h.display.clear()
        #expect(h.send(Req.flush(1, rect(1, 0, 2, 2))).isOK)
        let native = order.hasPrefix("BGR")
        // Native formats: a pointer into the host copy with the resource's stride (no copy).
        // Others: converted rows packed in the scratch buffer.
        #expect(h.display.events == [
            .update(0, rect: PixelRect(x: 1, y: 0, width: 2, height: 2), stride: native ? 16 : 8, pixels: expectedXRGB(order, 1, 0, 2, 2)),
        ])
    }

    @Test func largeConvertedFlushesReuseAndGrowTheScratchBuffer() {
        let h = Harness()
        h.upload(1, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, 300, 200, image: patternImage("RGBA", 300, 200))
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 300, 200))).isOK)
        h.display.clear()
        #expect(h.send(Req.flush(1, rect(0, 0, 10, 10))).isOK)
        #expect(h.send(Req.flush(1, rect(5, 7, 290, 190))).isOK)
        #expect(h.send(Req.flush(1, rect(299, 199, 1, 1))).isOK)
        #expect(h.display.events == [
            .update(0, rect: PixelRect(x: 0, y: 0, width: 10, height: 10), stride: 40, pixels: expectedXRGB("RGBA", 0, 0, 10, 10)),
            .update(0, rect: PixelRect(x: 5, y: 7, width: 290, height: 190), stride: 1160, pixels: expectedXRGB("RGBA", 5, 7, 290, 190)),
            .update(0, rect: PixelRect(x: 299, y: 199, width: 1, height: 1), stride: 4, pixels: expectedXRGB("RGBA", 299, 199, 1, 1)),
        ])
    }
}

@Suite struct ScanoutTests {
    private func eightByEight(scanouts: UInt32 = 2) -> Harness {
        let h = Harness(config: GPUDeviceConfig(numScanouts: scanouts))
        h.upload(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8, image: patternImage("BGRX", 8, 8))
        return h
    }

    @Test func subRectScanoutSendsItsSizeAndContent() {
        let h = eightByEight()
        #expect(h.send(Req.setScanout(0, 1, rect(2, 3, 4, 2))).isOK)
        #expect(h.display.events == [
            .setScanout(0, width: 4, height: 2),
            .update(0, rect: PixelRect(x: 0, y: 0, width: 4, height: 2), stride: 32, pixels: expectedXRGB("BGRX", 2, 3, 4, 2)),
        ])
        #expect(h.gpu.scanoutStates()[0] == Scanout(resource: ResourceID(1), rect: PixelRect(x: 2, y: 3, width: 4, height: 2)))
    }

    @Test func resourceZeroDisablesOnce() {
        let h = eightByEight()
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 8, 8))).isOK)
        h.display.clear()
        #expect(h.send(Req.setScanout(0, 0, rect(0, 0, 0, 0))).isOK)
        #expect(h.display.events == [.setScanout(0, width: 0, height: 0)])
        #expect(h.send(Req.setScanout(0, 0, rect(0, 0, 0, 0))).isOK)
        #expect(h.display.events.count == 1)   // already disabled: nothing more (QEMU)
        #expect(h.gpu.scanoutStates()[0].resource == nil)
        // Flushing now reaches no scanout.
        #expect(h.send(Req.flush(1, rect(0, 0, 8, 8))).isOK)
        #expect(h.display.events.count == 1)
    }

    @Test(arguments: [UInt32(2), 16, 0xFFFF_FFFF])
    func invalidScanoutID(_ scanout: UInt32) {
        let h = eightByEight()
        #expect(h.send(Req.setScanout(scanout, 1, rect(0, 0, 8, 8))).error == .invalidScanoutID)
        #expect(h.send(Req.setScanout(scanout, 0, rect(0, 0, 0, 0))).error == .invalidScanoutID)
        #expect(h.display.events.isEmpty)
    }

    @Test func unknownResource() {
        let h = eightByEight()
        #expect(h.send(Req.setScanout(0, 9, rect(0, 0, 8, 8))).error == .invalidResourceID)
    }

    @Test(arguments: [rect(0, 0, 0, 8), rect(0, 0, 8, 0), rect(4, 0, 5, 8), rect(0, 1, 8, 8), rect(0xFFFF_FFFF, 0, 2, 2), rect(8, 8, 1, 1)])
    func badRectIsInvalidParameter(_ r: virtio_gpu_rect) {
        let h = eightByEight()
        #expect(h.send(Req.setScanout(0, 1, r)).error == .invalidParameter)
        #expect(h.display.events.isEmpty)
        #expect(h.gpu.scanoutStates()[0].resource == nil)
    }

    @Test func twoHeadsShowingOneResourceGetTheirOwnPartsInScanoutCoordinates() {
        let h = eightByEight()
        #expect(h.send(Req.setScanout(0, 1, rect(2, 2, 4, 4))).isOK)
        #expect(h.send(Req.setScanout(1, 1, rect(0, 0, 8, 8))).isOK)
        h.display.clear()
        #expect(h.send(Req.flush(1, rect(3, 1, 4, 2))).isOK)
        // Head 0 shows (2,2)-(6,6): the overlap is (3,2) 3x1, at (1,0) on that head.
        #expect(h.display.events == [
            .update(0, rect: PixelRect(x: 1, y: 0, width: 3, height: 1), stride: 32, pixels: expectedXRGB("BGRX", 3, 2, 3, 1)),
            .update(1, rect: PixelRect(x: 3, y: 1, width: 4, height: 2), stride: 32, pixels: expectedXRGB("BGRX", 3, 1, 4, 2)),
        ])
    }

    @Test func headsShowingDifferentResources() {
        let h = eightByEight()
        h.upload(2, VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM, 4, 4, image: patternImage("XRGB", 4, 4))
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 8, 8))).isOK)
        #expect(h.send(Req.setScanout(1, 2, rect(0, 0, 4, 4))).isOK)
        h.display.clear()
        #expect(h.send(Req.flush(2, rect(0, 0, 4, 4))).isOK)
        #expect(h.display.events == [
            .update(1, rect: PixelRect(x: 0, y: 0, width: 4, height: 4), stride: 16, pixels: expectedXRGB("XRGB", 0, 0, 4, 4)),
        ])
        #expect(h.gpu.snapshot().map(\.scanouts) == [[0], [1]])
    }
}

@Suite struct FlushTests {
    private func shown() -> Harness {
        let h = Harness()
        h.upload(1, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 8, 8, image: patternImage("BGRA", 8, 8))
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 4, 4))).isOK)
        h.display.clear()
        return h
    }

    @Test func unknownResource() {
        #expect(shown().send(Req.flush(5, rect(0, 0, 1, 1))).error == .invalidResourceID)
    }

    @Test(arguments: [rect(0, 0, 9, 1), rect(7, 7, 2, 1), rect(0xFFFF_FFFF, 0, 2, 1), rect(0, 0xFFFF_FFFF, 1, 2)])
    func rectOutsideResource(_ r: virtio_gpu_rect) {
        let h = shown()
        #expect(h.send(Req.flush(1, r)).error == .invalidParameter)
        #expect(h.display.events.isEmpty)
    }

    @Test func partOutsideTheScanoutIsClipped() {
        let h = shown()
        #expect(h.send(Req.flush(1, rect(2, 3, 6, 5))).isOK)
        #expect(h.display.events == [
            .update(0, rect: PixelRect(x: 2, y: 3, width: 2, height: 1), stride: 32, pixels: expectedXRGB("BGRA", 2, 3, 2, 1)),
        ])
    }

    @Test func regionNotShownSendsNothing() {
        let h = shown()
        #expect(h.send(Req.flush(1, rect(4, 4, 4, 4))).isOK)
        #expect(h.send(Req.flush(1, rect(0, 0, 0, 0))).isOK)
        #expect(h.display.events.isEmpty)
    }

    @Test func resourceOnNoScanoutSendsNothing() {
        let h = shown()
        h.create(2, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)
        #expect(h.send(Req.flush(2, rect(0, 0, 8, 8))).isOK)
        #expect(h.display.events.isEmpty)
    }

    @Test func flushShowsNewlyTransferredPixels() {
        let h = shown()
        let a = h.guest.alloc(256)
        h.guest.write([UInt8](repeating: 0x11, count: 256), at: a)
        // Replace the backing and transfer one row.
        #expect(h.send(Req.detach(1)).isOK)
        #expect(h.send(Req.attach(1, [(a, 256)])).isOK)
        #expect(h.send(Req.transfer(1, rect(0, 1, 4, 1), offset: 32)).isOK)
        #expect(h.send(Req.flush(1, rect(0, 1, 4, 1))).isOK)
        #expect(h.display.events == [
            .update(0, rect: PixelRect(x: 0, y: 1, width: 4, height: 1), stride: 32, pixels: [UInt8](repeating: 0x11, count: 16)),
        ])
    }
}

@Suite struct UnrefResetTests {
    @Test func unrefDisablesEveryScanoutShowingIt() {
        let h = Harness(config: GPUDeviceConfig(numScanouts: 3))
        h.upload(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8, image: patternImage("BGRX", 8, 8))
        h.create(2, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 8, 8))).isOK)
        #expect(h.send(Req.setScanout(1, 2, rect(0, 0, 8, 8))).isOK)
        #expect(h.send(Req.setScanout(2, 1, rect(0, 0, 4, 4))).isOK)
        h.display.clear()
        #expect(h.send(Req.unref(1)).isOK)
        #expect(h.display.events == [.setScanout(0, width: 0, height: 0), .setScanout(2, width: 0, height: 0)])
        #expect(h.gpu.scanoutStates().map(\.resource) == [nil, ResourceID(2), nil])
        #expect(h.gpu.snapshot().map(\.id) == [ResourceID(2)])
        #expect(h.gpu.hostStorage(of: ResourceID(1)) == nil)
        #expect(h.send(Req.unref(1)).error == .invalidResourceID)
    }

    @Test func unrefUnknown() {
        #expect(Harness().send(Req.unref(3)).error == .invalidResourceID)
        #expect(Harness().send(Req.unref(0)).error == .invalidResourceID)
    }

    @Test func unrefFreesTheIdForReuse() {
        let h = Harness()
        h.create(4, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)
        #expect(h.send(Req.unref(4)).isOK)
        #expect(h.send(Req.create2D(4, format: VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM.rawValue, 2, 2)).isOK)
        #expect(h.gpu.snapshot().first?.format == .a8b8g8r8)
    }

    @Test func resetDropsResourcesUUIDsAndScanouts() {
        let registry = ResourceUUIDRegistry()
        let h = Harness(registry: registry, deviceID: 1)
        let other = Harness(registry: registry, deviceID: 2)
        h.upload(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8, image: patternImage("BGRX", 8, 8))
        other.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)
        #expect(h.send(Req.assignUUID(1)).type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue)
        #expect(other.send(Req.assignUUID(1)).type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue)
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 8, 8))).isOK)
        h.display.clear()

        h.gpu.reset()

        #expect(h.display.events == [.setScanout(0, width: 0, height: 0)])
        #expect(h.gpu.snapshot().isEmpty)
        #expect(h.gpu.scanoutStates().allSatisfy { $0.resource == nil })
        #expect(registry.uuid(device: GPUDeviceID(1), resource: ResourceID(1)) == nil)
        #expect(registry.uuid(device: GPUDeviceID(2), resource: ResourceID(1)) != nil)   // other device untouched
        #expect(registry.count == 1)
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)   // the id is free again
    }
}

/// The stale-content rule: SET_SCANOUT sends only the SCANOUT; the whole head follows with the
/// next flush of the resource (whatever its rect) or, without one, when the control queue goes idle.
@Suite struct ScanoutFrameOwedTests {
    private func twoResources() -> Harness {
        let h = Harness()
        h.upload(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 4, image: patternImage("BGRX", 8, 4))
        h.upload(2, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 4, image: patternImage("BGRX", 8, 4))
        h.display.clear()
        return h
    }

    @Test func aFlipSendsTheFrameOnceAndThePartialFlushShowsTheWholeHead() {
        let h = twoResources()
        // One batch, as Linux sends a page flip: SET_SCANOUT, then a flush of a part only.
        #expect(h.sendInBatch(Req.setScanout(0, 2, rect(0, 0, 8, 4))).isOK)
        #expect(h.display.events == [.setScanout(0, width: 8, height: 4)])
        #expect(h.sendInBatch(Req.flush(2, rect(2, 1, 3, 2))).isOK)
        #expect(h.display.events == [
            .setScanout(0, width: 8, height: 4),
            .update(0, rect: PixelRect(x: 0, y: 0, width: 8, height: 4), stride: 32, pixels: expectedXRGB("BGRX", 0, 0, 8, 4)),
        ])
        h.gpu.controlQueueIdle()   // nothing owed any more
        #expect(h.display.updates.count == 1)
        #expect(h.gpu.scanoutStates()[0] == Scanout(resource: ResourceID(2), rect: PixelRect(x: 0, y: 0, width: 8, height: 4)))
    }

    @Test func withoutAFlushTheHeadIsShownWhenTheQueueGoesIdle() {
        let h = twoResources()
        #expect(h.sendInBatch(Req.setScanout(0, 1, rect(0, 0, 8, 4))).isOK)
        #expect(h.display.updates.isEmpty)
        h.gpu.controlQueueIdle()
        #expect(h.display.events == [
            .setScanout(0, width: 8, height: 4),
            .update(0, rect: PixelRect(x: 0, y: 0, width: 8, height: 4), stride: 32, pixels: expectedXRGB("BGRX", 0, 0, 8, 4)),
        ])
        h.gpu.controlQueueIdle()
        #expect(h.display.updates.count == 1)
    }

    @Test func aFlushOfAnotherResourceDoesNotPayTheOwedFrame() {
        let h = twoResources()
        #expect(h.sendInBatch(Req.setScanout(0, 1, rect(0, 0, 8, 4))).isOK)
        #expect(h.sendInBatch(Req.flush(2, rect(0, 0, 8, 4))).isOK)   // not on any head
        #expect(h.display.updates.isEmpty)
        h.gpu.controlQueueIdle()
        #expect(h.display.updates.count == 1)
    }

    @Test func anOwedHeadDisabledBeforeIdleSendsNothing() {
        let h = twoResources()
        #expect(h.sendInBatch(Req.setScanout(0, 1, rect(0, 0, 8, 4))).isOK)
        #expect(h.sendInBatch(Req.setScanout(0, 0, rect(0, 0, 0, 0))).isOK)
        h.gpu.controlQueueIdle()
        #expect(h.display.events == [.setScanout(0, width: 8, height: 4), .setScanout(0, width: 0, height: 0)])
    }
}

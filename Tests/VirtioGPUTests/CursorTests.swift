import CShims
import Testing
@testable import VirtioGPU

@Suite struct CursorTests {
    /// Expected ARGB8888 (bytes B,G,R,A) for a 64×64 pattern in `order`: alpha kept where the
    /// format has one, 0xFF for X formats.
    private func expectedARGB(_ order: String) -> [UInt8] {
        var out: [UInt8] = []
        for y in 0..<64 {
            for x in 0..<64 {
                let p = patternRGBA(x, y)
                out += [p.b, p.g, p.r, order.contains("A") ? p.a : 0xFF]
            }
        }
        return out
    }

    @Test(arguments: formatOrders.map(\.order))
    func updateSendsConvertedImageWithHotSpot(_ order: String) throws {
        let format = try #require(formatOrders.first { $0.order == order }).format
        let h = Harness()
        h.upload(7, format, 64, 64, image: patternImage(order, 64, 64))
        let (n, _) = h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, scanout: 0, x: 100, y: 200, id: 7, hotX: 3, hotY: 4))
        #expect(n == 0)
        #expect(h.display.events == [.cursorUpdate(0, x: 100, y: 200, hotX: 3, hotY: 4, pixels: expectedARGB(order))])
    }

    @Test func moveAndHide() {
        let h = Harness(config: GPUDeviceConfig(numScanouts: 2))
        #expect(h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, scanout: 1, x: 5, y: 6, id: 7)).0 == 0)
        #expect(h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, scanout: 1, x: 5, y: 6, id: 0)).0 == 0)
        #expect(h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, scanout: 0, x: 1, y: 1, id: 0)).0 == 0)
        #expect(h.display.events == [.cursorMove(1, x: 5, y: 6), .cursorHide(1), .cursorHide(0)])
    }

    @Test func nothingIsWrittenBack() {
        let h = Harness()
        let (n, buffer) = h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, x: 1, y: 2, id: 1), responseSize: 24)
        #expect(n == 0)
        #expect(buffer == [UInt8](repeating: 0xEE, count: 24))
    }

    @Test func badCursorRequestsAreDropped() {
        let h = Harness(config: GPUDeviceConfig(numScanouts: 2))
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 32, 32)      // not 64x64
        h.create(2, VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, 64, 65)
        _ = h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, id: 1))
        _ = h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, id: 2))
        _ = h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, id: 99))                  // unknown
        _ = h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, scanout: 2, id: 0))       // bad scanout
        _ = h.sendCursor(Req.cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, scanout: 0xFFFF_FFFF, id: 1))
        _ = h.sendCursor(Array(Req.cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, x: 1, y: 1, id: 1)[0..<40]))   // truncated
        _ = h.sendCursor(Req.create2D(3, format: VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM.rawValue, 64, 64))  // control command
        _ = h.sendCursor([])
        #expect(h.display.events.isEmpty)
        #expect(h.gpu.snapshot().count == 2)   // the CREATE_2D on the cursor queue was not executed
    }
}

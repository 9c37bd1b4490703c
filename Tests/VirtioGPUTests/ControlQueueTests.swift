import CShims
import DisplayChannel
import Testing
import VirtioCore
@testable import VirtioGPU

@Suite struct DisplayInfoTests {
    @Test func defaultsEnableScanoutZeroAtConfiguredMode() {
        let h = Harness(config: GPUDeviceConfig(numScanouts: 2))
        let r = h.send(Req.displayInfo())
        #expect(r.type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
        #expect(r.written == UInt32(MemoryLayout<virtio_gpu_resp_display_info>.size))
        let info = load(virtio_gpu_resp_display_info.self, from: r.bytes)
        #expect(info.pmodes.0.enabled == 1)
        #expect(info.pmodes.0.r.width == 1280 && info.pmodes.0.r.height == 800)
        #expect(info.pmodes.1.enabled == 0)
        #expect(info.pmodes.1.r.width == 0)
        #expect(info.pmodes.15.enabled == 0)
    }

    @Test func configuredDefaultModeAndEnabledHeads() {
        let h = Harness(config: GPUDeviceConfig(numScanouts: 3, defaultWidth: 1024, defaultHeight: 768, defaultEnabledScanouts: 2))
        let info = load(virtio_gpu_resp_display_info.self, from: h.send(Req.displayInfo()).bytes)
        #expect(info.pmodes.0.enabled == 1 && info.pmodes.0.r.width == 1024 && info.pmodes.0.r.height == 768)
        #expect(info.pmodes.1.enabled == 1 && info.pmodes.1.r.width == 1024)
        #expect(info.pmodes.2.enabled == 0)
    }

    @Test func sinkViewWinsAndIsCutToScanoutCount() {
        let modes = [
            DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1920, height: 1080), enabled: true, flags: 0),
            DisplayMode(rect: PixelRect(x: 1920, y: 0, width: 800, height: 600), enabled: true, flags: 5),
            DisplayMode(rect: PixelRect(x: 0, y: 0, width: 640, height: 480), enabled: true),
        ]
        let h = Harness(config: GPUDeviceConfig(numScanouts: 2), display: RecordingDisplay(modes: modes))
        let info = load(virtio_gpu_resp_display_info.self, from: h.send(Req.displayInfo()).bytes)
        #expect(info.pmodes.0.r.width == 1920 && info.pmodes.0.r.height == 1080 && info.pmodes.0.enabled == 1)
        #expect(info.pmodes.1.r.x == 1920 && info.pmodes.1.r.width == 800 && info.pmodes.1.flags == 5)
        #expect(info.pmodes.2.enabled == 0 && info.pmodes.2.r.width == 0)   // beyond numScanouts
    }

    @Test func scanoutCountIsClamped() {
        #expect(Harness(config: GPUDeviceConfig(numScanouts: 0)).gpu.numScanouts == 1)
        #expect(Harness(config: GPUDeviceConfig(numScanouts: 99)).gpu.numScanouts == 16)
        #expect(Harness(config: GPUDeviceConfig(numScanouts: 4)).gpu.numScanouts == 4)
    }
}

@Suite struct EDIDCommandTests {
    private func edid(_ r: Response) -> [UInt8] {
        let resp = load(virtio_gpu_resp_edid.self, from: r.bytes)
        let n = Int(resp.size)
        return Array(r.bytes[32..<(32 + n)])
    }

    @Test func generatedEDIDIsValidWithPreferredDefaultMode() {
        let h = Harness(config: GPUDeviceConfig(numScanouts: 2))
        let r = h.send(Req.getEDID(0))
        #expect(r.type == VIRTIO_GPU_RESP_OK_EDID.rawValue)
        #expect(r.written == UInt32(MemoryLayout<virtio_gpu_resp_edid>.size))
        let e = edid(r)
        #expect(e.count == 128)
        #expect(Array(e[0..<8]) == [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00])
        #expect(e.reduce(UInt8(0), &+) == 0)
        #expect(e[18] == 1 && e[19] == 4)
        #expect(EDIDTestParse.preferred(e) == (1280, 800))
        #expect(EDIDTestParse.monitorName(e) == "vgpu")
    }

    @Test func preferredModeFollowsDisplayInfoFromSink() {
        let modes = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1920, height: 1080), enabled: true),
                     DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1024, height: 768), enabled: true)]
        let h = Harness(config: GPUDeviceConfig(numScanouts: 2), display: RecordingDisplay(modes: modes))
        h.send(Req.displayInfo())
        #expect(EDIDTestParse.preferred(edid(h.send(Req.getEDID(0)))) == (1920, 1080))
        #expect(EDIDTestParse.preferred(edid(h.send(Req.getEDID(1)))) == (1024, 768))
    }

    @Test func sinkEDIDIsPassedThrough() {
        let blob = (0..<256).map { UInt8(truncatingIfNeeded: $0 * 3) }
        let h = Harness(display: RecordingDisplay(edids: [0: blob]))
        let r = h.send(Req.getEDID(0))
        #expect(r.type == VIRTIO_GPU_RESP_OK_EDID.rawValue)
        #expect(load(virtio_gpu_resp_edid.self, from: r.bytes).size == 256)
        #expect(edid(r) == blob)
    }

    @Test func oversizedSinkEDIDFallsBackToGenerated() {
        let h = Harness(display: RecordingDisplay(edids: [0: [UInt8](repeating: 1, count: 2000)]))
        let e = edid(h.send(Req.getEDID(0)))
        #expect(EDIDGenerator.isValidBaseBlock(e))
    }

    @Test(arguments: [UInt32(2), 16, 0xFFFF_FFFF])
    func invalidScanout(_ scanout: UInt32) {
        let h = Harness(config: GPUDeviceConfig(numScanouts: 2))
        let r = h.send(Req.getEDID(scanout))
        #expect(r.error == .invalidScanoutID)
        #expect(r.written == 24)
    }
}

/// Minimal EDID reading for assertions.
enum EDIDTestParse {
    static func preferred(_ e: [UInt8]) -> (Int, Int) {
        let w = Int(e[56]) | Int(e[58] >> 4) << 8
        let h = Int(e[59]) | Int(e[61] >> 4) << 8
        return (w, h)
    }
    static func pixelClock10kHz(_ e: [UInt8]) -> Int { Int(e[54]) | Int(e[55]) << 8 }
    static func monitorName(_ e: [UInt8]) -> String? {
        for d in stride(from: 54, to: 126, by: 18) where e[d] == 0 && e[d + 1] == 0 && e[d + 3] == 0xFC {
            let text = e[(d + 5)..<(d + 18)].prefix { $0 != 0x0A }
            return String(decoding: text, as: UTF8.self)
        }
        return nil
    }
}

@Suite struct CreateResourceTests {
    @Test func allEightFormats() {
        let h = Harness()
        for (i, f) in formatOrders.enumerated() {
            let r = h.send(Req.create2D(UInt32(i + 1), format: f.format.rawValue, 33, 17))
            #expect(r.isOK, "format \(f.order)")
            #expect(r.written == 24)
        }
        let snap = h.gpu.snapshot()
        #expect(snap.count == 8)
        #expect(snap.map(\.format.wireValue) == formatOrders.map(\.format.rawValue))
        #expect(snap.allSatisfy { $0.width == 33 && $0.height == 17 && $0.stride == 132 && $0.hostBytes == 33 * 17 * 4 })
    }

    @Test func hostCopyIsAMemfdOfTheRightSize() throws {
        let h = Harness()
        h.create(7, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 100, 50)
        let s = try #require(h.gpu.hostStorage(of: ResourceID(7)))
        #expect(s.length == 100 * 50 * 4)
        #expect(s.fd >= 0)
    }

    @Test func idZeroIsInvalidResourceID() {
        let r = Harness().send(Req.create2D(0, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 8, 8))
        #expect(r.error == .invalidResourceID)
    }

    @Test func existingIdIsInvalidResourceID() {
        let h = Harness()
        h.create(3, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)
        #expect(h.send(Req.create2D(3, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 8, 8)).error == .invalidResourceID)
        // QEMU checks existence before the format.
        #expect(h.send(Req.create2D(3, format: 999, 8, 8)).error == .invalidResourceID)
    }

    @Test(arguments: [UInt32(0), 5, 66, 999, 0xFFFF_FFFF])
    func unknownFormatIsInvalidParameter(_ format: UInt32) {
        let h = Harness()
        #expect(h.send(Req.create2D(1, format: format, 8, 8)).error == .invalidParameter)
        #expect(h.gpu.snapshot().isEmpty)
    }

    @Test(arguments: [(UInt32(0), UInt32(8)), (8, 0), (0, 0)])
    func zeroSizeIsInvalidParameter(_ size: (UInt32, UInt32)) {
        let h = Harness()
        #expect(h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, size.0, size.1)).error == .invalidParameter)
    }

    @Test func hugeSizesAreOutOfMemory() {
        let h = Harness()
        #expect(h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 0xFFFF_FFFF, 0xFFFF_FFFF)).error == .outOfMemory)
        #expect(h.send(Req.create2D(2, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 0x8000_0000, 2)).error == .outOfMemory)
        #expect(h.gpu.snapshot().isEmpty)
    }

    @Test func perResourceCap() {
        let h = Harness(config: GPUDeviceConfig(maxResourceBytes: 1 << 20))
        #expect(h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 512, 512)).isOK)   // exactly 1 MiB
        #expect(h.send(Req.create2D(2, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 512, 513)).error == .outOfMemory)
    }

    @Test func totalCapAndRelease() {
        let h = Harness(config: GPUDeviceConfig(maxResourceBytes: 1 << 20, maxTotalBytes: 2 << 20))
        let f = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue
        #expect(h.send(Req.create2D(1, format: f, 512, 512)).isOK)
        #expect(h.send(Req.create2D(2, format: f, 512, 512)).isOK)
        #expect(h.send(Req.create2D(3, format: f, 1, 1)).error == .outOfMemory)
        #expect(h.send(Req.unref(1)).isOK)
        #expect(h.send(Req.create2D(3, format: f, 512, 512)).isOK)
    }

    @Test func resourceCountCap() {
        let h = Harness(config: GPUDeviceConfig(maxResources: 2))
        let f = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue
        #expect(h.send(Req.create2D(1, format: f, 4, 4)).isOK)
        #expect(h.send(Req.create2D(2, format: f, 4, 4)).isOK)
        #expect(h.send(Req.create2D(3, format: f, 4, 4)).error == .outOfMemory)
    }
}

@Suite struct FenceTests {
    let fence = UInt32(VIRTIO_GPU_FLAG_FENCE)
    let ringIdx = UInt32(VIRTIO_GPU_FLAG_INFO_RING_IDX)

    @Test func fenceIdCtxAndRingIdxAreEchoed() {
        let h = Harness()
        let header = hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, flags: fence | ringIdx, fence: 0x1122_3344_5566_7788, ctx: 7, ring: 3)
        let r = h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 4, 4, header: header))
        #expect(r.isOK)
        #expect(r.header.flags == fence | ringIdx)
        #expect(r.header.fence_id == 0x1122_3344_5566_7788)
        #expect(r.header.ctx_id == 7)
        #expect(r.header.ring_idx == 3)
    }

    @Test func ringIdxOnlyWithItsFlag() {
        let h = Harness()
        let header = hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, flags: fence, fence: 42, ctx: 1, ring: 3)
        let r = h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 4, 4, header: header))
        #expect(r.header.flags == fence)
        #expect(r.header.fence_id == 42)
        #expect(r.header.ring_idx == 0)
    }

    @Test func noFenceNoEcho() {
        let h = Harness()
        let header = hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, flags: 0, fence: 42, ctx: 9)
        let r = h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 4, 4, header: header))
        #expect(r.header.flags == 0 && r.header.fence_id == 0 && r.header.ctx_id == 0)
    }

    @Test func errorResponsesEchoTheFenceToo() {
        let h = Harness()
        let header = hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, flags: fence, fence: 99)
        let r = h.send(Req.create2D(0, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 4, 4, header: header))
        #expect(r.error == .invalidResourceID)
        #expect(r.header.flags == fence && r.header.fence_id == 99)
    }

    @Test func displayInfoEchoesFence() {
        let h = Harness()
        let r = h.send(bytes(of: hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, flags: fence, fence: 5)))
        #expect(r.type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
        #expect(r.header.flags == fence && r.header.fence_id == 5)
    }
}

@Suite struct UnsupportedAndMalformedTests {
    static let unsupported: [virtio_gpu_ctrl_type] = [
        VIRTIO_GPU_CMD_GET_CAPSET_INFO, VIRTIO_GPU_CMD_GET_CAPSET, VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB,
        VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, VIRTIO_GPU_CMD_CTX_CREATE, VIRTIO_GPU_CMD_CTX_DESTROY,
        VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE, VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, VIRTIO_GPU_CMD_SUBMIT_3D,
        VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB,
    ]

    @Test(arguments: unsupported.map(\.rawValue))
    func threeDAndBlobCommandsAreUnspec(_ type: UInt32) {
        let h = Harness()
        // A plausible body follows the header; none of it is read.
        let r = h.send(bytes(of: hdr(virtio_gpu_ctrl_type(rawValue: type))) + [UInt8](repeating: 0xFF, count: 96))
        #expect(r.error == .unspec)
        #expect(r.written == 24)
    }

    @Test(arguments: [UInt32(0), 0x99, 0x0111, 0x0400, 0x1100, 0xFFFF_FFFF])
    func unknownTypesAreUnspec(_ type: UInt32) {
        let r = Harness().send(bytes(of: hdr(virtio_gpu_ctrl_type(rawValue: type))))
        #expect(r.error == .unspec)
    }

    @Test func cursorCommandsOnTheControlQueueAreUnspec() {
        let h = Harness()
        #expect(h.send(Req.cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, x: 1, y: 1, id: 1)).error == .unspec)
        #expect(h.display.events.isEmpty)
    }

    @Test func shortHeaderIsInvalidParameterWithZeroedHeader() {
        let h = Harness()
        let full = bytes(of: hdr(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, flags: UInt32(VIRTIO_GPU_FLAG_FENCE), fence: 77))
        let r = h.send(Array(full[0..<10]))
        #expect(r.error == .invalidParameter)
        #expect(r.header.flags == 0 && r.header.fence_id == 0)
        #expect(r.written == 24)
    }

    @Test func emptyRequestIsInvalidParameter() {
        #expect(Harness().send([]).error == .invalidParameter)
    }

    @Test func truncatedCommandExecutesNothing() {
        let h = Harness()
        let header = hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, flags: UInt32(VIRTIO_GPU_FLAG_FENCE), fence: 3)
        let full = Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 8, 8, header: header)
        let r = h.send(Array(full[0..<(full.count - 1)]))
        #expect(r.error == .invalidParameter)
        #expect(r.header.fence_id == 3)   // the header itself was whole
        #expect(h.gpu.snapshot().isEmpty)
    }

    @Test(arguments: [24, 30, 39])
    func everyTruncationOfSetScanoutIsRejected(_ length: Int) {
        let h = Harness()
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)
        let full = Req.setScanout(0, 1, rect(0, 0, 8, 8))
        #expect(h.send(Array(full[0..<length])).error == .invalidParameter)
        #expect(h.display.events.isEmpty)
    }

    @Test func requestSplitOverDescriptorsDecodes() {
        let h = Harness()
        let r = h.send(Req.create2D(5, format: VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM.rawValue, 3, 2), splits: [1, 7, 25, 33])
        #expect(r.isOK)
        #expect(h.gpu.snapshot().first?.id == ResourceID(5))
    }

    @Test func noRoomForResponseExecutesNothingAndWritesNothing() {
        let h = Harness()
        let r = h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 8, 8), responseSize: 0)
        #expect(r.written == 0)
        #expect(h.gpu.snapshot().isEmpty)
        let small = h.send(Req.create2D(1, format: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, 8, 8), responseSize: 23)
        #expect(small.written == 0)
        #expect(small.bytes == [UInt8](repeating: 0xEE, count: 23))
        #expect(h.gpu.snapshot().isEmpty)
    }

    @Test func responseSmallerThanDisplayInfoIsNotWritten() {
        let h = Harness()
        let r = h.send(Req.displayInfo(), responseSize: 24)
        #expect(r.written == 0)
        #expect(r.bytes == [UInt8](repeating: 0xEE, count: 24))
    }

    @Test func processorKeepsGoingAfterGarbage() {
        let h = Harness()
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let n = Int.random(in: 0..<80, using: &rng)
            var junk = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if junk.count >= 4, Bool.random(using: &rng) {
                // Aim at real command types so the decoders see garbage bodies.
                let t = UInt32.random(in: 0x100...0x10C, using: &rng)
                junk.replaceSubrange(0..<4, with: bytes(of: t))
            }
            _ = h.send(junk)
        }
        h.create(0xABCD_EF01, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 8, 8)
        #expect(h.gpu.snapshot().contains { $0.id == ResourceID(0xABCD_EF01) })
    }
}

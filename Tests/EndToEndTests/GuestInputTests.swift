import CShims
import DisplayChannel
import Testing
import FrontendSide
import VirtioCore
import VirtioGPU
import VGPUTestSupport

/// The guest is untrusted: every bad field gets the spec's error and the device keeps serving.
@Suite(.serialized) struct GuestInputTests {
    /// After each bad command, a good one must still work.
    func stillServing(_ rig: GPURig) throws {
        #expect(try rig.driver.getDisplayInfo().type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
    }

    @Test func createRejectsBadIDsFormatsAndSizes() throws {
        var config = GPUDeviceConfig(numScanouts: 16)
        config.maxResourceBytes = 64 << 20
        let rig = try GPURig(config: config)
        let d = rig.driver
        #expect(try d.createResource2D(id: 0, width: 4, height: 4).type == ERR_RESOURCE)
        #expect(try d.createResource2D(id: 1, width: 4, height: 4).type == OK)
        #expect(try d.createResource2D(id: 1, width: 4, height: 4).type == ERR_RESOURCE)       // duplicate
        #expect(try d.createResource2D(id: 2, format: 999, width: 4, height: 4).type == ERR_PARAMETER)
        #expect(try d.createResource2D(id: 3, width: 0, height: 4).type == ERR_PARAMETER)
        #expect(try d.createResource2D(id: 4, width: 0xffff_ffff, height: 0xffff_ffff).type == ERR_OOM)
        #expect(try d.createResource2D(id: 5, width: 8192, height: 8192).type == ERR_OOM)      // 256 MiB > 64 MiB cap
        try stillServing(rig)
    }

    @Test func totalMemoryIsCapped() throws {
        var config = GPUDeviceConfig(numScanouts: 16)
        config.maxTotalBytes = 8 << 20
        let rig = try GPURig(config: config)
        #expect(try rig.driver.createResource2D(id: 1, width: 1024, height: 1024).type == OK)      // 4 MiB
        #expect(try rig.driver.createResource2D(id: 2, width: 1024, height: 1024).type == OK)      // 8 MiB
        #expect(try rig.driver.createResource2D(id: 3, width: 16, height: 16).type == ERR_OOM)
        #expect(try rig.driver.unref(id: 1).type == OK)
        #expect(try rig.driver.createResource2D(id: 3, width: 16, height: 16).type == OK)
    }

    @Test func unknownResourcesAndScanouts() throws {
        let rig = try GPURig()
        let d = rig.driver
        #expect(try d.unref(id: 42).type == ERR_RESOURCE)
        #expect(try d.flush(id: 42, rect: VirtioGPUDriver.rect(0, 0, 1, 1)).type == ERR_RESOURCE)
        #expect(try d.transferToHost2D(id: 42, rect: VirtioGPUDriver.rect(0, 0, 1, 1)).type == ERR_RESOURCE)
        #expect(try d.assignUUID(id: 42).type == ERR_RESOURCE)
        #expect(try d.detachBacking(id: 42).type == ERR_RESOURCE)
        #expect(try d.setScanout(0, id: 42, rect: VirtioGPUDriver.rect(0, 0, 1, 1)).type == ERR_RESOURCE)
        _ = try rig.makeResource(id: 1, width: 8, height: 8, pixels: pixelPattern(8, 8))
        #expect(try d.setScanout(16, id: 1, rect: VirtioGPUDriver.rect(0, 0, 8, 8)).type == ERR_SCANOUT)
        #expect(try d.setScanout(0xffff_ffff, id: 1, rect: VirtioGPUDriver.rect(0, 0, 8, 8)).type == ERR_SCANOUT)
        #expect(try d.getEDID(scanout: 99).type == ERR_SCANOUT)
        try stillServing(rig)
    }

    @Test func rectsOutsideTheResource() throws {
        let rig = try GPURig()
        let d = rig.driver
        _ = try rig.makeResource(id: 1, width: 8, height: 8, pixels: pixelPattern(8, 8))
        #expect(try d.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(4, 4, 8, 8)).type == ERR_PARAMETER)
        #expect(try d.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0xffff_fff0, 0, 0x20, 1)).type == ERR_PARAMETER)
        #expect(try d.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, 9, 8)).type == ERR_PARAMETER)
        #expect(try d.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(1, 1, 8, 8)).type == ERR_PARAMETER)
        // Offset pointing past the backing.
        #expect(try d.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, 8, 8), offset: 1 << 40).type == ERR_PARAMETER)
        try stillServing(rig)
    }

    @Test func backingEntriesAreChecked() throws {
        let rig = try GPURig()
        let d = rig.driver
        #expect(try d.createResource2D(id: 1, width: 16, height: 16).type == OK)
        // Outside guest RAM.
        #expect(try d.attachBacking(id: 1, entries: [(GuestPhysicalAddress(1 << 40), 4096)]).type == ERR_PARAMETER)
        // Wrapping past 2^64.
        #expect(try d.attachBacking(id: 1, entries: [(GuestPhysicalAddress(UInt64.max - 10), 4096)]).type == ERR_PARAMETER)
        // nr_entries claims more than the chain holds.
        var c = virtio_gpu_resource_attach_backing()
        c.hdr = VirtioGPUDriver.header(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING)
        c.resource_id = 1
        c.nr_entries = 1_000_000
        #expect(try d.submit(c).type != OK)
        // Backing too small for a transfer.
        let small = rig.place([UInt8](repeating: 1, count: 64))
        #expect(try d.attachBacking(id: 1, entries: [(small, 64)]).type == OK)
        #expect(try d.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, 16, 16)).type == ERR_PARAMETER)
        // Attaching twice.
        #expect(try d.attachBacking(id: 1, entries: [(small, 64)]).type != OK)
        #expect(try d.detachBacking(id: 1).type == OK)
        // Transfer without backing.
        #expect(try d.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, 1, 1)).type != OK)
        try stillServing(rig)
    }

    @Test func truncatedUnknownAnd3DCommands() throws {
        let rig = try GPURig()
        let d = rig.driver
        // A header alone for RESOURCE_CREATE_2D: nothing runs.
        var hdr = VirtioGPUDriver.header(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D)
        let hdrBytes = withUnsafeBytes(of: &hdr) { Array($0) }
        #expect(try d.submitRaw(hdrBytes, responseSize: 24).type == ERR_PARAMETER)
        #expect(rig.device.processor.snapshot().isEmpty)
        // Less than a header.
        #expect(try d.submitRaw([1, 2, 3], responseSize: 24).type == ERR_PARAMETER)
        // Unknown command.
        var unknown = VirtioGPUDriver.header(VIRTIO_GPU_CMD_GET_DISPLAY_INFO)
        unknown.type = 0x7777
        #expect(try d.submit(unknown).type == ERR_UNSPEC)
        // 3D commands without virgl.
        for cmd in [VIRTIO_GPU_CMD_CTX_CREATE, VIRTIO_GPU_CMD_SUBMIT_3D, VIRTIO_GPU_CMD_RESOURCE_CREATE_3D, VIRTIO_GPU_CMD_GET_CAPSET_INFO] {
            var big = [UInt8](repeating: 0, count: 128)
            var h = VirtioGPUDriver.header(cmd)
            withUnsafeBytes(of: &h) { big.replaceSubrange(0..<$0.count, with: $0) }
            #expect(try d.submitRaw(big, responseSize: 64).type == ERR_UNSPEC)
        }
        // No room for a response: the chain still comes back.
        _ = try d.submitRaw(hdrBytes, responseSize: 0)
        try stillServing(rig)
    }

    @Test func indirectChainsWork() throws {
        let rig = try GPURig()
        let r = try rig.driver.submit(VirtioGPUDriver.header(VIRTIO_GPU_CMD_GET_DISPLAY_INFO),
                                      responseSize: MemoryLayout<virtio_gpu_resp_display_info>.size, indirect: true)
        #expect(r.type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
    }
}

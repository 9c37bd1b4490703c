import CShims
import Foundation
import Testing
import FrontendSide
import VirglRenderer
import VirtioCore
import VirtioGPU

/// Issue 11 §3.2: under --virgl the guest cannot allocate past --max-resource-memory. Sizes
/// count bytes per texel, mip levels, layers and samples; export shadows count too.
extension Virgl3DTests {
    func makeRenderer(limits: ResourceLimits) throws -> VirglGPURenderer {
        let deadline = Date().addingTimeInterval(30)
        while true {
            let attempt = Result { () throws(VirglError) -> VirglGPURenderer in try VirglGPURenderer(limits: limits) }
            switch attempt {
            case let .success(r): return r
            case let .failure(e):
                guard e == .alreadyRunning, Date() < deadline else { throw e }
                usleep(50_000)
            }
        }
    }

    func create3D(_ d: VirtioGPUDriver, id: UInt32, format: UInt32, width: UInt32, height: UInt32,
                  arraySize: UInt32 = 1, lastLevel: UInt32 = 0, samples: UInt32 = 0,
                  target: UInt32 = VirglTarget.texture2D) throws -> UInt32 {
        var c = virtio_gpu_resource_create_3d()
        c.hdr = header(VIRTIO_GPU_CMD_RESOURCE_CREATE_3D)
        c.resource_id = id
        c.target = target
        c.format = format
        c.bind = VirglBind.samplerView
        c.width = width; c.height = height; c.depth = 1; c.array_size = arraySize
        c.last_level = lastLevel; c.nr_samples = samples
        return try d.submit(c).type
    }

    /// 8 MiB RGBA textures against a 32 MiB device cap: the fifth is ERR_OUT_OF_MEMORY; after an
    /// UNREF there is room for one again. Before the fix every create passed (the total was
    /// never checked).
    @Test func virglTotalCapAnswersOutOfMemory() throws {
        let limits = ResourceLimits(maxResourceBytes: 16 << 20, maxTotalBytes: 32 << 20, maxResources: 4096)
        let renderer = try makeRenderer(limits: limits)
        defer { renderer.shutdown() }
        let rig = try GPURig(config: GPUDeviceConfig(numScanouts: 1), renderer: renderer)
        defer { _ = rig.disconnect() }
        let d = rig.driver
        let ok = VIRTIO_GPU_RESP_OK_NODATA.rawValue, oom = VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY.rawValue
        for id: UInt32 in 1...4 {
            #expect(try create3D(d, id: id, format: VirglFormat.r8g8b8a8Unorm, width: 1024, height: 2048) == ok)
        }
        #expect(renderer.accountedBytes == 32 << 20)
        #expect(try create3D(d, id: 5, format: VirglFormat.r8g8b8a8Unorm, width: 1024, height: 2048) == oom)
        #expect(try d.unref(id: 2).type == ok)
        #expect(renderer.accountedBytes == 24 << 20)
        #expect(try create3D(d, id: 5, format: VirglFormat.r8g8b8a8Unorm, width: 1024, height: 2048) == ok)
        // A 2D resource through virgl counts too (4 bytes a pixel).
        #expect(try d.createResource2D(id: 6, width: 64, height: 64).type == oom)
        // A reset (the guest reboots) gives the whole budget back.
        rig.device.reset()
        #expect(renderer.accountedBytes == 0)
    }

    /// The size estimate counts what the host really allocates: texels, layers, levels, samples.
    /// Before the fix 1024x1024 RGBA with 64 layers was counted as 64 Mi "bytes" and passed a
    /// 128 MiB per-resource cap; it is 256 MiB.
    @Test func virglSizeCountsTexelBytesLayersMipsSamples() throws {
        let limits = ResourceLimits(maxResourceBytes: 128 << 20, maxTotalBytes: 1 << 30, maxResources: 4096)
        let renderer = try makeRenderer(limits: limits)
        defer { renderer.shutdown() }
        let rig = try GPURig(config: GPUDeviceConfig(numScanouts: 1), renderer: renderer)
        defer { _ = rig.disconnect() }
        let d = rig.driver
        let oom = VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY.rawValue
        #expect(try create3D(d, id: 1, format: VirglFormat.r8g8b8a8Unorm, width: 1024, height: 1024, arraySize: 64,
                             target: VirglTarget.texture2DArray) == oom)
        // 4096x4096 R32G32B32A32_FLOAT (31): 256 MiB.
        #expect(try create3D(d, id: 2, format: 31, width: 4096, height: 4096) == oom)
        // 4096x4096 RGBA8 with 8 samples: 512 MiB.
        #expect(try create3D(d, id: 3, format: VirglFormat.r8g8b8a8Unorm, width: 4096, height: 4096, samples: 8) == oom)
        #expect(renderer.accountedBytes == 0)
        // Pure arithmetic for the rest (no GL allocation needed). An overflow (nil) reads as
        // UInt64.max: Swift Testing's comparison of a `UInt64?` in #expect reads 9 bytes of an
        // 8-byte slot (AddressSanitizer: stack-buffer-overflow in its AnyHashable thunk).
        func size(_ w: UInt32, _ h: UInt32, format: UInt32 = VirglFormat.r8g8b8a8Unorm, layers: UInt32 = 1, levels: UInt32 = 0,
                  samples: UInt32 = 0, depth: UInt32 = 1, target: UInt32 = VirglTarget.texture2D) -> UInt64 {
            VirglResourceSize.bytes(VirglResourceCreate3D(resourceID: 1, target: target, format: format, bind: 0, width: w, height: h,
                                                          depth: depth, arraySize: layers, lastLevel: levels, sampleCount: samples)) ?? .max
        }
        #expect(size(8192, 8192) == 256 << 20)
        #expect(size(4, 4, levels: 2) == (16 + 4 + 1) * 4)
        #expect(size(4, 4, levels: 40) == (16 + 4 + 1 + 38) * 4)
        #expect(size(16, 16, depth: 16, target: VirglTarget.texture3D) == 16 * 16 * 16 * 4)
        #expect(size(16, 16, format: 27) == 16 * 16 * 32)
        #expect(size(.max, .max, layers: .max, samples: .max) == .max)
    }
}

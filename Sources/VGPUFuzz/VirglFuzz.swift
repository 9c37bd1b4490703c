import CShims
import DisplayChannel
import VirglRenderer
import VirtioCore
import VirtioGPU

/// virgl SUBMIT_3D streams through the device on llvmpipe: context 1 with a 64x64 render
/// target attached; the input is a sequence of command streams (each a length and words).
/// The device (and virglrenderer) is reset every 256 inputs to keep its objects bounded.
enum VirglFuzz {
    nonisolated(unsafe) static var state: (FuzzRAM, GPUCommandProcessor)?
    nonisolated(unsafe) static var runs = 0

    static func submit<T: BitwiseCopyable>(_ processor: GPUCommandProcessor, _ ram: FuzzRAM, _ value: T, trailing: [UInt8] = []) {
        var v = value
        withUnsafeBytes(of: &v) { ram.write(Array($0) + trailing, at: 0x1000) }
        let chain = DescriptorChain(head: 0, descriptors: [
            Descriptor(address: GuestPhysicalAddress(0x1000), length: UInt32(MemoryLayout<T>.size + trailing.count), isWritable: false),
            Descriptor(address: GuestPhysicalAddress(0x80000), length: 4096, isWritable: true)])
        _ = processor.handleControl(chain, memory: ram.memory)
    }

    static func prepare(_ processor: GPUCommandProcessor, _ ram: FuzzRAM) {
        var ctx = virtio_gpu_ctx_create()
        ctx.hdr.type = VIRTIO_GPU_CMD_CTX_CREATE.rawValue
        ctx.hdr.ctx_id = 1
        ctx.nlen = 4
        submit(processor, ram, ctx)
        var c = virtio_gpu_resource_create_3d()
        c.hdr.type = VIRTIO_GPU_CMD_RESOURCE_CREATE_3D.rawValue
        c.resource_id = 1; c.target = VirglTarget.texture2D; c.format = VirglFormat.b8g8r8a8Unorm
        c.bind = VirglBind.renderTarget | VirglBind.samplerView; c.width = 64; c.height = 64; c.depth = 1; c.array_size = 1
        submit(processor, ram, c)
        var a = virtio_gpu_ctx_resource()
        a.hdr.type = VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE.rawValue
        a.hdr.ctx_id = 1
        a.resource_id = 1
        submit(processor, ram, a)
    }

    static func setUp() -> (FuzzRAM, GPUCommandProcessor)? {
        if let state { return state }
        let limits = ResourceLimits(maxResourceBytes: 16 << 20, maxTotalBytes: 64 << 20, maxResources: 64)
        guard let renderer = try? VirglGPURenderer(limits: limits) else { return nil }
        let ram = FuzzRAM(size: 1 << 20)
        let processor = GPUCommandProcessor(config: GPUDeviceConfig(numScanouts: 1, guestErrorLogsPerSecond: 0), display: NullDisplay(),
                                            uuids: ResourceUUIDRegistry(), deviceID: GPUDeviceID(1), renderer: renderer, logger: quietLogger())
        prepare(processor, ram)
        state = (ram, processor)
        return state
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        guard let (ram, processor) = setUp() else { return }
        var input = FuzzInput(data)
        var streams = 0
        while !input.atEnd, streams < 8 {
            streams += 1
            let words = Int(input.u16() % 1024)
            let stream = input.bytes(words * 4)
            var s = virtio_gpu_cmd_submit()
            s.hdr.type = VIRTIO_GPU_CMD_SUBMIT_3D.rawValue
            s.hdr.ctx_id = 1
            s.size = UInt32(stream.count)
            submit(processor, ram, s, trailing: stream)
        }
        runs += 1
        if runs % 256 == 0 {
            processor.reset()
            prepare(processor, ram)
        }
    }
}

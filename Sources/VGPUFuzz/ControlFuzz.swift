import CShims
import ControlProtocol
import ControlServer
import DisplayChannel
import VhostUser
import VirtioCore
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The UUID the fuzz devices' first ASSIGN_UUID gets (seeds name it).
let fuzzUUID = ResourceUUID(high: 0x1122_3344_5566_4788, low: 0x99aa_bbcc_ddee_ff00)

/// A control server with one device holding three resources (one with the fixed UUID),
/// shared by the control and importer targets.
enum FuzzControlServer {
    nonisolated(unsafe) static var state: (ControlServer, GPUCommandProcessor, FuzzRAM)?

    static func setUp() -> ControlServer {
        if let state { return state.0 }
        let directory = DeviceDirectory()
        let ram = FuzzRAM(size: 1 << 20)
        let first = Mutex(true)
        let uuids = ResourceUUIDRegistry(makeUUID: { first.withLock { f in defer { f = false }; return f } ? fuzzUUID : ResourceUUID.random() })
        let processor = GPUCommandProcessor(config: GPUDeviceConfig(numScanouts: 1, guestErrorLogsPerSecond: 0), display: NullDisplay(),
                                            uuids: uuids, deviceID: GPUDeviceID(1), events: directory.events, logger: quietLogger())
        directory.register(processor, label: "fuzz")
        // Resources made through the device's own command path: 16x16 with backing, UUID 1.
        func submit<T: BitwiseCopyable>(_ value: T) {
            var v = value
            withUnsafeBytes(of: &v) { ram.write(Array($0), at: 0x1000) }
            let chain = DescriptorChain(head: 0, descriptors: [
                Descriptor(address: GuestPhysicalAddress(0x1000), length: UInt32(MemoryLayout<T>.size), isWritable: false),
                Descriptor(address: GuestPhysicalAddress(0x2000), length: 4096, isWritable: true)])
            _ = processor.handleControl(chain, memory: ram.memory)
        }
        for id: UInt32 in 1...3 {
            var c = virtio_gpu_resource_create_2d()
            c.hdr.type = VIRTIO_GPU_CMD_RESOURCE_CREATE_2D.rawValue
            c.resource_id = id; c.format = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue; c.width = 16; c.height = 16
            submit(c)
            struct Attach { var a: virtio_gpu_resource_attach_backing; var e: virtio_gpu_mem_entry }
            var at = Attach(a: virtio_gpu_resource_attach_backing(), e: virtio_gpu_mem_entry())
            at.a.hdr.type = VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING.rawValue
            at.a.resource_id = id; at.a.nr_entries = 1
            at.e.addr = 0x10000; at.e.length = 1024
            submit(at)
            var u = virtio_gpu_resource_assign_uuid()
            u.hdr.type = VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID.rawValue
            u.resource_id = id
            if id == 1 { submit(u) }
        }
        let path = "/tmp/vgpu-fuzz-ctl-\(getpid()).sock"
        let server = try! ControlServer(path: path, directory: directory, logger: quietLogger(), partialLineTimeout: 0.05)
        server.start()
        state = (server, processor, ram)
        return server
    }
}

/// Control-protocol requests: the input is what a client writes on the control socket (JSON
/// lines, half lines, garbage), served by the real server with a real device behind it.
enum ControlFuzz {
    static func run(_ data: UnsafeRawBufferPointer) {
        _ = ControlCodec.decodeRequest(data)
        let server = FuzzControlServer.setUp()
        guard let s = try? UnixSocket.connect(path: server.path) else { return }
        var sent = 0
        while sent < data.count {
            let n = send(s.rawValue, data.baseAddress! + sent, data.count - sent, Int32(MSG_NOSIGNAL))
            if n <= 0 { break }
            sent += n
        }
        shutdown(s.rawValue, Int32(SHUT_WR))
        // Read until the server closes (it does at EOF), a buffer at a time: a fd that comes
        // with an answer is closed when the receive's array goes. (Reading a byte at a time
        // with a poll per byte was most of this target's cost: 218-331 exec/s.)
        // One buffer for the whole campaign (64 KiB per input was an allocation and a clear each).
        let deadline = monotonicSeconds() + 1
        while (try? Poll.waitReadable(s.rawValue, until: deadline, wake: nil)) != nil {
            let got = try? UnixSocket.receiveSome(s.rawValue, into: replyBuffer)
            guard let got, got.count > 0 else { break }
        }
    }

    nonisolated(unsafe) private static let replyBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
}

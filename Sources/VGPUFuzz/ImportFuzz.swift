import CImportWire
import ImportDevice
import VirtioCore

/// The importer device's request path: 40-byte requests and 128-byte responses, laid out by
/// the input (split, reordered, short, wild), against the fuzz control server whose device
/// holds a resource with the fixed UUID (so IMPORT, QUERY and RELEASE all get past NOT_FOUND).
enum ImportFuzz {
    nonisolated(unsafe) static var state: (FuzzRAM, ImportVhostUserDevice)?

    static func run(_ data: UnsafeRawBufferPointer) {
        if state == nil {
            let server = FuzzControlServer.setUp()
            let options = ImportDeviceOptions(controlSockets: [server.path], sharedObjectLookup: false, maxHandles: 4, holder: "fuzz")
            guard let device = try? ImportVhostUserDevice(options: options, logger: quietLogger()) else { return }
            state = (FuzzRAM(size: 1 << 16), device)
        }
        guard let (ram, device) = state else { return }
        var input = FuzzInput(data)
        ram.zero(0, 1 << 16)
        var requests = 0
        while !input.atEnd, requests < 16 {
            requests += 1
            let layout = input.u8()
            let length = layout & 0x80 != 0 ? Int(input.u8()) : Int(MemoryLayout<vgpu_import_wire_req>.size)
            let request = input.bytes(length)
            ram.write(request, at: 0x1000)
            let chain = fuzzChain(&input, layout: layout, ram: ram, requestAt: 0x1000, requestLength: request.count, responseAt: 0x2000,
                                  responseLength: layout & 0x40 != 0 ? UInt32(input.u8()) : UInt32(MemoryLayout<vgpu_import_wire_resp>.size))
            _ = device.handleChain(queue: 0, chain: chain, memory: ram.memory)
        }
        device.reset()
    }
}

import DisplayChannel
import VirtioCore
import VirtioGPU

/// The GPU command path: a real device (2D renderer, resource table, UUID registry) over memfd
/// guest RAM. The input is a sequence of chains: a layout byte, a length and the request bytes.
/// Guest RAM from 64 KiB on holds whatever the input put there (backing pages, pixels).
enum GPUFuzz {
    nonisolated(unsafe) static var state: (FuzzRAM, GPUCommandProcessor)?

    static func setUp() -> (FuzzRAM, GPUCommandProcessor) {
        if let state { return state }
        let ram = FuzzRAM(size: 4 << 20)
        let config = GPUDeviceConfig(numScanouts: 2, maxResourceBytes: 1 << 20, maxTotalBytes: 4 << 20, maxResources: 64,
                                     maxBackingEntries: 256, guestErrorLogsPerSecond: 0)
        let processor = GPUCommandProcessor(config: config, display: NullDisplay(), uuids: ResourceUUIDRegistry(),
                                            deviceID: GPUDeviceID(1), logger: quietLogger())
        state = (ram, processor)
        return (ram, processor)
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        let (ram, processor) = setUp()
        var input = FuzzInput(data)
        ram.zero(0, 1 << 20)
        var chains = 0
        while !input.atEnd, chains < 64 {
            chains += 1
            let layout = input.u8()
            let length = Int(input.u16() % 2048)
            let request = input.bytes(length)
            ram.write(request, at: 0x1000)
            if layout & 0x80 != 0 { ram.write(input.bytes(Int(input.u8()) * 16), at: 0x10000 + Int(input.u16()) * 16) }
            let chain = fuzzChain(&input, layout: layout, ram: ram, requestAt: 0x1000, requestLength: request.count,
                                  responseAt: 0x8000, responseLength: 4096)
            if layout & 0x40 != 0 {
                _ = processor.handleCursor(chain, memory: ram.memory)
            } else {
                _ = processor.handleControl(chain, memory: ram.memory)
            }
        }
        processor.reset()
    }
}

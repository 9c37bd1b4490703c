import VirtioCore

/// The split-virtqueue walker: ring and descriptor table bytes straight from the input
/// (indirect tables, chains that loop, event idx, an avail index that wraps or jumps).
enum QueueFuzz {
    nonisolated(unsafe) static var ram: FuzzRAM?
    nonisolated(unsafe) static var scratch = [UInt8](repeating: 0, count: 1 << 16)

    static func run(_ data: UnsafeRawBufferPointer) {
        let ram = Self.ram ?? FuzzRAM(size: 1 << 16)
        Self.ram = ram
        var input = FuzzInput(data)
        let size = UInt16(1) << UInt16(input.u8() % 9)          // 1...256
        let flags = input.u8()
        let nextAvail = input.u16()
        ram.zero(0, 1 << 16)
        ram.write(input.rest(), at: 0)
        // Descriptor table at 0, avail ring at 4 KiB, used ring at 8 KiB; flag bit 1 moves the
        // used ring onto the avail ring (overlap) and bit 2 puts it at the end of RAM (outside).
        let used: UInt64 = flags & 2 != 0 ? 0x1000 : (flags & 4 != 0 ? 0xFFF0 : 0x2000)
        let addresses = VringAddresses(descriptorTable: .init(0), availableRing: .init(0x1000), usedRing: .init(used))
        guard let queue = try? SplitVirtqueue(size: size, addresses: addresses, memory: ram.memory,
                                              eventIndex: flags & 1 != 0, nextAvail: nextAvail) else { return }
        var chain = DescriptorChain()
        for _ in 0..<(2 * Int(size) + 2) {
            do {
                guard try queue.popChain(into: &chain) else { break }
                var reader = ChainReader(chain: chain, memory: ram.memory)
                let n = min(reader.remaining, scratch.count)
                try? scratch.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
                var writer = ChainWriter(chain: chain, memory: ram.memory)
                let m = min(writer.available, 64)
                try? scratch.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<m])) }
                queue.addUsed(head: chain.head, length: UInt32(m))
            } catch {
                guard let head = error.recoverableHead else { break }
                queue.addUsed(head: head, length: 0)
            }
        }
        _ = queue.needsNotification()
        _ = try? queue.enableKicks()
        _ = try? queue.pendingCount()
    }
}

import Testing
import VirtioCore
import VGPUTestSupport

/// Garbage descriptor tables and avail rings (virtio-queue keeps a fuzz target for this): popChain
/// must never trap, never loop, and hand out only chains whose every buffer is guest RAM.
@Suite("SplitVirtqueue randomized chain walking")
struct ChainWalkFuzzTests {
    static let queueSize: UInt16 = 16

    /// Ring region A = [0x10000, 0x20000) (rings at its start), B adjacent = [0x20000, 0x21000),
    /// a hole, then C = [0x40000, 0x41000).
    static let regionA: (start: UInt64, size: Int) = (0x10000, 0x10000)
    static let regionB: (start: UInt64, size: Int) = (0x20000, 0x1000)
    static let regionC: (start: UInt64, size: Int) = (0x40000, 0x1000)
    static let frontendA: UInt64 = 0x7f00_0001_0000
    static let availOffset = 0x100     // after 16 * 16 bytes of descriptors
    static let usedOffset = 0x200
    static let indirectOffset = 0x1000 // a scratch area for indirect tables, also garbage

    /// An address that is interesting for the walker: mostly in or near RAM and its edges.
    static func randomAddress(_ rng: inout SplitMix64) -> UInt64 {
        let edges: [UInt64] = [0x10000, 0x20000, 0x21000, 0x40000, 0x41000, 0x11000]
        switch rng.next() % 8 {
        case 0: return rng.next()                                          // anywhere
        case 1: return UInt64.max - rng.next() % 0x100                      // near the top
        case 2, 3: return edges[Int(rng.next() % UInt64(edges.count))] &- 0x40 &+ rng.next() % 0x80
        case 4: return regionA.start + UInt64(indirectOffset) + 16 * (rng.next() % 8)   // at a table
        default: return 0xf000 + rng.next() % 0x33000                       // the mapped window, holes included
        }
    }

    static func randomLength(_ rng: inout SplitMix64) -> UInt32 {
        switch rng.next() % 6 {
        case 0: return UInt32(truncatingIfNeeded: rng.next())
        case 1: return UInt32(16 * (rng.next() % 20))                   // indirect-table-like
        case 2: return UInt32(0x1000 + rng.next() % 0x20) &- 0x10        // near region sizes
        default: return UInt32(rng.next() % 0x100)
        }
    }

    static func randomFlags(_ rng: inout SplitMix64) -> UInt16 {
        rng.next() % 8 == 0 ? UInt16(truncatingIfNeeded: rng.next()) : UInt16(rng.next() % 8)
    }

    static func randomNext(_ rng: inout SplitMix64) -> UInt16 {
        rng.next() % 8 == 0 ? UInt16(truncatingIfNeeded: rng.next()) : UInt16(rng.next() % 20)
    }

    @Test("2000 garbage queues: popChain returns only in-RAM chains or throws, and always finishes")
    func garbageQueues() throws {
        let a = AnonymousMapping(size: Self.regionA.size)
        let b = AnonymousMapping(size: Self.regionB.size)
        let c = AnonymousMapping(size: Self.regionC.size)
        let memory = try GuestMemory(regions: [
            makeRegion(guest: Self.regionA.start, size: Self.regionA.size, frontend: Self.frontendA, mapping: a),
            makeRegion(guest: Self.regionB.start, size: Self.regionB.size, mapping: b),
            makeRegion(guest: Self.regionC.start, size: Self.regionC.size, mapping: c),
        ])
        let addresses = VringAddresses(descriptorTable: FrontendVirtualAddress(Self.frontendA),
                                       availableRing: FrontendVirtualAddress(Self.frontendA + UInt64(Self.availOffset)),
                                       usedRing: FrontendVirtualAddress(Self.frontendA + UInt64(Self.usedOffset)))
        var rng = SplitMix64(seed: 0x5eed_1234_abcd_0001)
        var popped = 0, refused = 0, jumps = 0
        var seenErrors: Set<String> = []

        for iteration in 0..<2000 {
            // Arrange: garbage in the descriptor table and in two candidate indirect tables.
            func entry(_ base: UnsafeMutableRawPointer, _ i: Int) {
                let e = base + 16 * i
                e.storeBytes(of: Self.randomAddress(&rng), as: UInt64.self)
                (e + 8).storeBytes(of: Self.randomLength(&rng), as: UInt32.self)
                (e + 12).storeBytes(of: Self.randomFlags(&rng), as: UInt16.self)
                (e + 14).storeBytes(of: Self.randomNext(&rng), as: UInt16.self)
            }
            for i in 0..<Int(Self.queueSize) { entry(a.base, i) }
            for i in 0..<16 { entry(a.base + Self.indirectOffset, i) }
            let startIndex = UInt16(truncatingIfNeeded: rng.next())
            let pending = UInt16(rng.next() % (UInt64(Self.queueSize) + 3))   // sometimes > size: a jump
            (a.base + Self.availOffset + 2).storeBytes(of: startIndex &+ pending, as: UInt16.self)
            for slot in 0..<Int(Self.queueSize) {
                let head = rng.next() % 8 == 0 ? UInt16(truncatingIfNeeded: rng.next()) : UInt16(rng.next() % 16)
                (a.base + Self.availOffset + 4 + 2 * slot).storeBytes(of: head, as: UInt16.self)
            }
            let queue = try SplitVirtqueue(size: Self.queueSize, addresses: addresses, memory: memory,
                                           eventIndex: rng.next() % 2 == 0, nextAvail: startIndex)
            var chain = DescriptorChain()
            var jumped = false

            // Act + assert: drain the ring. The loop bound is a backstop: each pop consumes a slot.
            for _ in 0...Int(Self.queueSize) {
                do {
                    guard try queue.popChain(into: &chain) else { break }
                    popped += 1
                    try checkChain(chain, memory: memory, iteration: iteration)
                    queue.addUsed(head: chain.head, length: UInt32(chain.writableBytes))
                } catch let error as VirtqueueError {
                    seenErrors.insert(Self.kind(error))
                    if case .availIndexJump = error { jumped = true; jumps += 1; break }
                    refused += 1
                    if let head = error.recoverableHead {
                        #expect(head < Self.queueSize, "iteration \(iteration): recoverable head \(head)")
                        queue.addUsed(head: head, length: 0)
                    }
                }
            }
            if !jumped { #expect(try queue.pendingCount() == 0, "iteration \(iteration): ring not drained") }
            _ = queue.needsNotification()
            _ = try? queue.enableKicks()
        }

        // The generator must reach both outcomes, or the test proves nothing.
        #expect(popped > 100)
        #expect(refused > 100)
        #expect(jumps > 10)
        #expect(seenErrors.isSuperset(of: ["memory", "chainTooLong", "nextOutOfRange", "headOutOfRange",
                                           "readableAfterWritable", "indirectWithNext", "indirectBadLength"]),
                "error kinds reached: \(seenErrors.sorted())")
    }

    static func kind(_ error: VirtqueueError) -> String {
        switch error {
        case .availIndexJump: "availIndexJump"
        case .headOutOfRange: "headOutOfRange"
        case .nextOutOfRange: "nextOutOfRange"
        case .chainTooLong: "chainTooLong"
        case .nestedIndirect: "nestedIndirect"
        case .indirectWithNext: "indirectWithNext"
        case .indirectBadLength: "indirectBadLength"
        case .readableAfterWritable: "readableAfterWritable"
        case .lengthOverflow: "lengthOverflow"
        case .memory: "memory"
        }
    }

    /// A chain handed out must be in-RAM, ordered, and readable/writable in full.
    private func checkChain(_ chain: DescriptorChain, memory: GuestMemory, iteration: Int) throws {
        #expect(chain.head < Self.queueSize)
        var sawWritable = false
        var readable = 0, writable = 0
        for d in chain.descriptors {
            #expect(throws: Never.self, "iteration \(iteration): \(d) outside RAM") {
                try memory.validate(d.address, length: Int(d.length))
            }
            if d.isWritable { sawWritable = true; writable += Int(d.length) }
            else { #expect(!sawWritable, "iteration \(iteration): readable after writable"); readable += Int(d.length) }
        }
        #expect(chain.readableBytes == readable)
        #expect(chain.writableBytes == writable)
        // Every byte the chain promises can be read and written through the cursors. The writer
        // puts back what is already there: the buffers may overlap the rings, which must not change.
        var reader = ChainReader(chain: chain, memory: memory)
        var readBytes = [UInt8](repeating: 0, count: reader.remaining)
        try readBytes.withUnsafeMutableBytes { try reader.read(into: $0) }
        var current: [UInt8] = []
        for d in chain.descriptors where d.isWritable {
            var piece = [UInt8](repeating: 0, count: Int(d.length))
            try piece.withUnsafeMutableBytes { try memory.read(into: $0, from: d.address) }
            current += piece
        }
        var writer = ChainWriter(chain: chain, memory: memory)
        try current.withUnsafeBytes { try writer.write($0) }
        #expect(writer.available == 0)
    }
}

import Testing
import VirtioCore
import VGPUTestSupport

private typealias Q = DriverQueue

@Suite("SplitVirtqueue setup")
struct SplitVirtqueueSetupTests {
    @Test("init fails when the descriptor table is outside guest RAM")
    func tableOutsideRAM() {
        let driver = DriverQueue()
        var a = driver.addresses
        a.descriptorTable = FrontendVirtualAddress(0x1000)

        #expect(throws: GuestMemoryError.self) {
            try SplitVirtqueue(size: 8, addresses: a, memory: driver.memory, eventIndex: false)
        }
    }

    @Test("init fails when the used ring (with avail_event) runs past the end of the region")
    func usedRingStraddlesEnd() {
        let driver = DriverQueue()
        var a = driver.addresses
        // 6 + 8 * 8 = 70 bytes needed; only 68 left.
        a.usedRing = FrontendVirtualAddress(Q.frontendBase + UInt64(Q.ramSize) - 68)

        #expect(throws: GuestMemoryError.self) {
            try SplitVirtqueue(size: 8, addresses: a, memory: driver.memory, eventIndex: true)
        }
    }

    @Test("init fails when the avail ring lacks room for used_event")
    func availRingStraddlesEnd() {
        let driver = DriverQueue()
        var a = driver.addresses
        a.availableRing = FrontendVirtualAddress(Q.frontendBase + UInt64(Q.ramSize) - (4 + 2 * 8))

        #expect(throws: GuestMemoryError.self) {
            try SplitVirtqueue(size: 8, addresses: a, memory: driver.memory, eventIndex: false)
        }
    }

    @Test("init refuses rings that break the spec's alignment (16 / 2 / 4)",
          arguments: [(0, 8, 16), (1, 1, 2), (2, 2, 4)])
    func misalignedRings(part: Int, shift: UInt64, alignment: Int) {
        let driver = DriverQueue()
        var a = driver.addresses
        let moved: FrontendVirtualAddress
        switch part {
        case 0: moved = FrontendVirtualAddress(a.descriptorTable.raw + shift); a.descriptorTable = moved
        case 1: moved = FrontendVirtualAddress(a.availableRing.raw + shift); a.availableRing = moved
        default: moved = FrontendVirtualAddress(a.usedRing.raw + shift); a.usedRing = moved
        }

        #expect(throws: GuestMemoryError.misaligned(address: moved.raw, alignment: alignment)) {
            try SplitVirtqueue(size: 8, addresses: a, memory: driver.memory, eventIndex: false)
        }
    }

    @Test("ring addresses are frontend addresses, not guest addresses")
    func guestAddressesRejected() {
        let driver = DriverQueue()
        let a = VringAddresses(descriptorTable: FrontendVirtualAddress(Q.gpa(Q.descOffset)),
                               availableRing: FrontendVirtualAddress(Q.gpa(Q.availOffset)),
                               usedRing: FrontendVirtualAddress(Q.gpa(Q.usedOffset)))

        #expect(throws: GuestMemoryError.self) {
            try SplitVirtqueue(size: 8, addresses: a, memory: driver.memory, eventIndex: false)
        }
    }

    @Test("without an explicit nextUsed, init continues from used.idx in guest memory")
    func nextUsedFromRing() throws {
        let driver = DriverQueue(startIndex: 1234)

        let queue = try driver.makeDevice()

        #expect(queue.nextUsed == 1234)
        #expect(queue.nextAvail == 1234)
    }

    @Test("an explicit nextUsed wins over used.idx")
    func nextUsedExplicit() throws {
        let driver = DriverQueue(startIndex: 1234)

        let queue = try SplitVirtqueue(size: 8, addresses: driver.addresses, memory: driver.memory, eventIndex: false,
                                       nextAvail: 7, nextUsed: 9)

        #expect(queue.nextUsed == 9)
        #expect(queue.nextAvail == 7)
    }
}

@Suite("SplitVirtqueue avail ring")
struct SplitVirtqueueAvailTests {
    let driver = DriverQueue()

    @Test("an empty queue has nothing pending")
    func emptyPending() throws {
        let queue = try driver.makeDevice()

        #expect(try queue.pendingCount() == 0)
    }

    @Test("pendingCount counts published chains")
    func pendingCounts() throws {
        driver.setChain([(Q.buffer(0), 8, false)])
        let queue = try driver.makeDevice()
        driver.publish(0)
        driver.publish(0)
        driver.publish(0)

        #expect(try queue.pendingCount() == 3)
    }

    @Test("popChain on an empty queue returns false and does not move")
    func popEmpty() throws {
        let queue = try driver.makeDevice()
        var chain = DescriptorChain()

        let popped = try queue.popChain(into: &chain)

        #expect(!popped)
        #expect(queue.nextAvail == 0)
    }

    @Test("exactly queue-size chains pending is allowed")
    func fullRing() throws {
        let queue = try driver.makeDevice()
        driver.setAvailIndex(8)

        #expect(try queue.pendingCount() == 8)
    }

    @Test("avail.idx moving by more than the queue size is refused")
    func availJump() throws {
        let queue = try driver.makeDevice()
        driver.setAvailIndex(9)

        #expect(throws: VirtqueueError.availIndexJump(from: 0, to: 9)) { try queue.pendingCount() }
    }

    @Test("popChain refuses an avail index jump and consumes nothing")
    func popAvailJump() throws {
        let queue = try driver.makeDevice()
        driver.setAvailIndex(0x8000)

        let error = popError(queue)

        #expect(error == .availIndexJump(from: 0, to: 0x8000))
        #expect(error?.recoverableHead == nil)
        #expect(queue.nextAvail == 0)
    }

    @Test("avail.idx behind nextAvail (moved backwards) is a jump, not 65535 chains")
    func availBackwards() throws {
        let queue = try driver.makeDevice(nextAvail: 5)
        driver.setAvailIndex(4)

        #expect(throws: VirtqueueError.availIndexJump(from: 5, to: 4)) { try queue.pendingCount() }
    }

    @Test("chains pop in avail ring order, one slot each")
    func popOrder() throws {
        driver.setChain([(Q.buffer(0), 1, false)], indices: [3])
        driver.setChain([(Q.buffer(1), 2, false)], indices: [6])
        let queue = try driver.makeDevice()
        driver.publish(6)
        driver.publish(3)

        let first = try pop(queue)
        let second = try pop(queue)
        let third = try pop(queue)

        #expect(first?.head == 6)
        #expect(second?.head == 3)
        #expect(third == nil)
        #expect(queue.nextAvail == 2)
    }

    @Test("a head outside the table is refused, has no recoverable head, and consumes its slot")
    func headOutOfRange() throws {
        driver.setChain([(Q.buffer(0), 4, false)])
        let queue = try driver.makeDevice()
        driver.publish(8)
        driver.publish(0)

        let error = popError(queue)
        let next = try pop(queue)

        #expect(error == .headOutOfRange(8))
        #expect(error?.recoverableHead == nil)
        #expect(next?.head == 0)
    }

    @Test("16-bit indices wrap: popping and returning chains from 65530 through 0")
    func indexWrap() throws {
        let driver = DriverQueue(size: 8, startIndex: 65530)
        for i in 0..<8 { driver.setChain([(Q.buffer(i), UInt32(i + 1), false)], indices: [i]) }
        let queue = try driver.makeDevice()
        var heads: [UInt16] = []
        var expected: [UInt16] = []

        for round in 0..<3 {   // 3 * 5 = 15 chains: 65530 ... 65535, 0 ... 8
            for k in 0..<5 {
                let head = UInt16((round * 5 + k) % 8)
                expected.append(head)
                driver.publish(head)
            }
            #expect(try queue.pendingCount() == 5)
            while let chain = try pop(queue) {
                heads.append(chain.head)
                #expect(chain.readableBytes == Int(chain.head) + 1)
                queue.addUsed(head: chain.head, length: UInt32(chain.head) * 10)
            }
        }

        #expect(heads == expected)
        #expect(queue.nextAvail == 65530 &+ 15)
        #expect(queue.nextAvail == 9)
        #expect(driver.usedIndex == 9)
        // The 15th used entry has index 65530 + 14, which wraps to 8: ring slot 0.
        let lastSlot = Int((65530 &+ 14) % 8)
        #expect(driver.usedElement(lastSlot) == UsedElement(UInt32(expected[14]), UInt32(expected[14]) * 10))
    }
}

@Suite("SplitVirtqueue chain walking")
struct SplitVirtqueueWalkTests {
    let driver = DriverQueue()

    @Test("a single readable descriptor")
    func single() throws {
        driver.setChain([(Q.buffer(0), 24, false)], indices: [2])

        let chain = try #require(try driver.popOne(2))

        #expect(chain.head == 2)
        #expect(chain.descriptors == [Descriptor(address: GuestPhysicalAddress(Q.buffer(0)), length: 24, isWritable: false)])
        #expect(chain.readableBytes == 24)
        #expect(chain.writableBytes == 0)
    }

    @Test("readable then writable descriptors keep their order and sum per direction")
    func readableThenWritable() throws {
        driver.setChain([(Q.buffer(0), 24, false), (Q.buffer(1), 8, false), (Q.buffer(2), 100, true), (Q.buffer(3), 4, true)])

        let chain = try #require(try driver.popOne(0))

        #expect(chain.descriptors.map(\.address.raw) == [Q.buffer(0), Q.buffer(1), Q.buffer(2), Q.buffer(3)])
        #expect(chain.descriptors.map(\.isWritable) == [false, false, true, true])
        #expect(chain.readableBytes == 32)
        #expect(chain.writableBytes == 104)
    }

    @Test("next links are followed in any order through the table")
    func scatteredIndices() throws {
        driver.setChain([(Q.buffer(0), 1, false), (Q.buffer(1), 2, false), (Q.buffer(2), 3, true)], indices: [5, 1, 7])

        let chain = try #require(try driver.popOne(5))

        #expect(chain.descriptors.map(\.length) == [1, 2, 3])
    }

    @Test("a chain using every table entry fits the hop budget")
    func fullLengthChain() throws {
        driver.setChain((0..<8).map { (Q.buffer($0), 1, false) }, indices: [7, 6, 5, 4, 3, 2, 1, 0])

        let chain = try #require(try driver.popOne(7))

        #expect(chain.descriptors.count == 8)
    }

    @Test("a zero-length descriptor is accepted and adds no bytes")
    func zeroLength() throws {
        driver.setChain([(Q.buffer(0), 0, false), (Q.buffer(1), 4, true)])

        let chain = try #require(try driver.popOne(0))

        #expect(chain.descriptors.count == 2)
        #expect(chain.readableBytes == 0)
        #expect(chain.writableBytes == 4)
    }

    @Test("popChain reuses the chain: a shorter second chain leaves nothing of the first")
    func reuse() throws {
        driver.setChain([(Q.buffer(0), 10, false), (Q.buffer(1), 20, true)], indices: [0, 1])
        driver.setChain([(Q.buffer(2), 5, true)], indices: [4])
        let queue = try driver.makeDevice()
        driver.publish(0)
        driver.publish(4)
        var chain = DescriptorChain()

        _ = try queue.popChain(into: &chain)
        _ = try queue.popChain(into: &chain)

        #expect(chain.head == 4)
        #expect(chain.descriptors.count == 1)
        #expect(chain.readableBytes == 0)
        #expect(chain.writableBytes == 5)
    }

    @Test("a loop in the table is refused by the hop budget, with its head recoverable")
    func loop() throws {
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 1)
        driver.setDescriptor(1, addr: Q.buffer(1), len: 4, flags: DescFlag.next, next: 0)

        let error = try driver.popFailure(0)

        #expect(error == .chainTooLong(head: 0))
        #expect(error?.recoverableHead == 0)
    }

    @Test("a descriptor pointing at itself is a loop")
    func selfLoop() throws {
        driver.setDescriptor(3, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 3)

        #expect(try driver.popFailure(3) == .chainTooLong(head: 3))
    }

    @Test("a loop entered after a few descriptors is still caught")
    func lateLoop() throws {
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 1)
        driver.setDescriptor(1, addr: Q.buffer(1), len: 4, flags: DescFlag.next, next: 2)
        driver.setDescriptor(2, addr: Q.buffer(2), len: 4, flags: DescFlag.next | DescFlag.write, next: 1)

        #expect(throws: VirtqueueError.self) { try driver.popOne(0) }
    }

    @Test("the queue keeps working after a refused chain")
    func continuesAfterError() throws {
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 0)
        driver.setChain([(Q.buffer(1), 4, false)], indices: [1])
        let queue = try driver.makeDevice()
        driver.publish(0)
        driver.publish(1)

        _ = popError(queue)
        let next = try pop(queue)

        #expect(next?.head == 1)
    }

    @Test("a next index outside the table is refused")
    func nextOutOfRange() throws {
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 8)

        let error = try driver.popFailure(0)

        #expect(error == .nextOutOfRange(head: 0, next: 8))
        #expect(error?.recoverableHead == 0)
    }

    @Test("next is ignored when the NEXT flag is clear")
    func nextIgnoredWithoutFlag() throws {
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: 0, next: 0xffff)

        let chain = try #require(try driver.popOne(0))

        #expect(chain.descriptors.count == 1)
    }

    @Test("a readable descriptor after a writable one is refused")
    func readableAfterWritable() throws {
        driver.setChain([(Q.buffer(0), 4, false), (Q.buffer(1), 4, true), (Q.buffer(2), 4, false)])

        let error = try driver.popFailure(0)

        #expect(error == .readableAfterWritable(head: 0))
        #expect(error?.recoverableHead == 0)
    }

    @Test("a descriptor outside guest RAM is refused with its head")
    func outsideRAM() throws {
        driver.setChain([(Q.buffer(0), 4, false), (0x1000, 4, true)], indices: [6, 2])

        let error = try driver.popFailure(6)

        #expect(error == .memory(head: 6, .outOfBounds(address: 0x1000, length: 4)))
        #expect(error?.recoverableHead == 6)
    }

    @Test("a descriptor running past the end of guest RAM is refused")
    func straddlesEnd() throws {
        driver.setChain([(Q.gpa(Q.ramSize - 8), 9, true)])

        #expect(try driver.popFailure(0) == .memory(head: 0, .outOfBounds(address: Q.gpa(Q.ramSize - 8), length: 9)))
    }

    @Test("a descriptor ending exactly at the end of guest RAM is accepted")
    func endsAtEnd() throws {
        driver.setChain([(Q.gpa(Q.ramSize - 8), 8, true)])

        #expect(try driver.popOne(0)?.writableBytes == 8)
    }

    @Test("a descriptor whose address + length wraps past 2^64 is refused")
    func wrapping() throws {
        driver.setChain([(UInt64.max - 2, 16, false)])

        #expect(try driver.popFailure(0) == .memory(head: 0, .overflow(address: UInt64.max - 2, length: 16)))
    }

    @Test("a chain whose readable total passes 4 GiB is refused")
    func lengthOverflow() throws {
        // A 12 GiB region of reserved (never touched) address space next to the rings.
        let big = AnonymousMapping(size: 3 << 32, readWrite: false)
        let ringRAM = AnonymousMapping(size: Q.ramSize)
        let memory = try GuestMemory(regions: [
            makeRegion(guest: Q.guestBase, size: Q.ramSize, frontend: Q.frontendBase, mapping: ringRAM),
            makeRegion(guest: 1 << 40, size: 3 << 32, frontend: 1 << 44, mapping: big),
        ])
        let desc = ringRAM.base
        for (i, (addr, len)) in [(UInt64(1) << 40, UInt32.max), (UInt64(1) << 40 + (1 << 32), UInt32(1))].enumerated() {
            (desc + 16 * i).storeBytes(of: addr, as: UInt64.self)
            (desc + 16 * i + 8).storeBytes(of: len, as: UInt32.self)
            (desc + 16 * i + 12).storeBytes(of: i == 0 ? DescFlag.next : 0, as: UInt16.self)
            (desc + 16 * i + 14).storeBytes(of: UInt16(i + 1), as: UInt16.self)
        }
        (ringRAM.base + Q.availOffset + 2).storeBytes(of: UInt16(1), as: UInt16.self)   // ring[0] = 0
        let queue = try SplitVirtqueue(size: 8, addresses: driver.addresses, memory: memory, eventIndex: false)

        let error = popError(queue)

        #expect(error == .lengthOverflow(head: 0))
    }

    @Test("a readable total of exactly 4 GiB - 1 is accepted")
    func lengthAtLimit() throws {
        let big = AnonymousMapping(size: 1 << 32, readWrite: false)
        let ringRAM = AnonymousMapping(size: Q.ramSize)
        let memory = try GuestMemory(regions: [
            makeRegion(guest: Q.guestBase, size: Q.ramSize, frontend: Q.frontendBase, mapping: ringRAM),
            makeRegion(guest: 1 << 40, size: 1 << 32, frontend: 1 << 44, mapping: big),
        ])
        ringRAM.base.storeBytes(of: UInt64(1) << 40, as: UInt64.self)
        (ringRAM.base + 8).storeBytes(of: UInt32.max, as: UInt32.self)
        (ringRAM.base + Q.availOffset + 2).storeBytes(of: UInt16(1), as: UInt16.self)
        let queue = try SplitVirtqueue(size: 8, addresses: driver.addresses, memory: memory, eventIndex: false)

        let chain = try #require(try pop(queue))

        #expect(chain.readableBytes == Int(UInt32.max))
    }
}

@Suite("SplitVirtqueue indirect tables")
struct SplitVirtqueueIndirectTests {
    let driver = DriverQueue()
    /// The indirect table lives in guest RAM at this region offset.
    static let tableOffset = 0x8000
    var tableGPA: UInt64 { Q.gpa(Self.tableOffset) }

    @Test("an indirect table is flattened into the chain")
    func flattened() throws {
        driver.setChain([(Q.buffer(0), 24, false), (Q.buffer(1), 8, false), (Q.buffer(2), 64, true)],
                        tableOffset: Self.tableOffset)
        driver.setDescriptor(3, addr: tableGPA, len: 48, flags: DescFlag.indirect)

        let chain = try #require(try driver.popOne(3))

        #expect(chain.head == 3)
        #expect(chain.descriptors.map(\.address.raw) == [Q.buffer(0), Q.buffer(1), Q.buffer(2)])
        #expect(chain.descriptors.map(\.isWritable) == [false, false, true])
        #expect(chain.readableBytes == 32)
        #expect(chain.writableBytes == 64)
    }

    @Test("next links inside an indirect table are followed")
    func linksInsideTable() throws {
        driver.setChain([(Q.buffer(0), 1, false), (Q.buffer(1), 2, false), (Q.buffer(2), 3, true)], indices: [0, 3, 1],
                        tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: tableGPA, len: 64, flags: DescFlag.indirect)

        let chain = try #require(try driver.popOne(0))

        #expect(chain.descriptors.map(\.length) == [1, 2, 3])
    }

    @Test("an indirect table may end a chain of direct descriptors")
    func afterDirect() throws {
        driver.setChain([(Q.buffer(1), 2, false), (Q.buffer(2), 3, true)], tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: Q.buffer(0), len: 1, flags: DescFlag.next, next: 1)
        driver.setDescriptor(1, addr: tableGPA, len: 32, flags: DescFlag.indirect)

        let chain = try #require(try driver.popOne(0))

        #expect(chain.descriptors.map(\.length) == [1, 2, 3])
    }

    @Test("the WRITE flag on the descriptor that points at the table is ignored (spec 2.7.5.3.2)")
    func writeFlagOnIndirectIgnored() throws {
        driver.setChain([(Q.buffer(0), 4, false), (Q.buffer(1), 4, true)], tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: tableGPA, len: 32, flags: DescFlag.indirect | DescFlag.write)

        let chain = try #require(try driver.popOne(0))

        #expect(chain.readableBytes == 4)
        #expect(chain.writableBytes == 4)
    }

    @Test("a chain through every entry of an indirect table fits its hop budget")
    func fullTable() throws {
        driver.setChain((0..<4).map { (Q.buffer($0), UInt32($0 + 1), false) }, indices: [0, 3, 1, 2], tableOffset: Self.tableOffset)   // a table starts at entry 0
        driver.setDescriptor(0, addr: tableGPA, len: 64, flags: DescFlag.indirect)

        let chain = try #require(try driver.popOne(0))

        #expect(chain.descriptors.map(\.length) == [1, 2, 3, 4])
    }

    @Test("an indirect table of the largest allowed size is accepted")
    func largestTable() throws {
        driver.setChain([(Q.buffer(0), 4, false)], tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: tableGPA, len: UInt32(16 * SplitVirtqueue.maxIndirectEntries), flags: DescFlag.indirect)

        #expect(try driver.popOne(0)?.descriptors.count == 1)
    }

    @Test("an indirect table inside an indirect table is refused")
    func nested() throws {
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 1, tableOffset: Self.tableOffset)
        driver.setDescriptor(1, addr: tableGPA, len: 32, flags: DescFlag.indirect, tableOffset: Self.tableOffset)
        driver.setDescriptor(5, addr: tableGPA, len: 32, flags: DescFlag.indirect)

        let error = try driver.popFailure(5)

        #expect(error == .nestedIndirect(head: 5))
        #expect(error?.recoverableHead == 5)
    }

    @Test("INDIRECT together with NEXT is refused")
    func indirectWithNext() throws {
        driver.setChain([(Q.buffer(0), 4, false)], tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: tableGPA, len: 16, flags: DescFlag.indirect | DescFlag.next, next: 1)
        driver.setDescriptor(1, addr: Q.buffer(1), len: 4, flags: DescFlag.write)

        let error = try driver.popFailure(0)

        #expect(error == .indirectWithNext(head: 0))
        #expect(error?.recoverableHead == 0)
    }

    @Test("an indirect length that is not a multiple of 16 is refused", arguments: [UInt32(1), 15, 17, 40])
    func lengthNotMultiple(length: UInt32) throws {
        driver.setChain([(Q.buffer(0), 4, false), (Q.buffer(1), 4, false), (Q.buffer(2), 4, false)], tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: tableGPA, len: length, flags: DescFlag.indirect)

        #expect(try driver.popFailure(0) == .indirectBadLength(head: 0, length: length))
    }

    @Test("an empty indirect table is refused")
    func zeroLength() throws {
        driver.setDescriptor(0, addr: tableGPA, len: 0, flags: DescFlag.indirect)

        #expect(try driver.popFailure(0) == .indirectBadLength(head: 0, length: 0))
    }

    @Test("an indirect table larger than the limit is refused", arguments: [
        UInt32(16 * (SplitVirtqueue.maxIndirectEntries + 1)), UInt32.max & ~15,
    ])
    func tooLarge(length: UInt32) throws {
        driver.setDescriptor(0, addr: tableGPA, len: length, flags: DescFlag.indirect)

        #expect(try driver.popFailure(0) == .indirectBadLength(head: 0, length: length))
    }

    @Test("an indirect table outside guest RAM is refused with its head")
    func tableOutsideRAM() throws {
        driver.setDescriptor(2, addr: 0x2000, len: 32, flags: DescFlag.indirect)

        let error = try driver.popFailure(2)

        #expect(error == .memory(head: 2, .outOfBounds(address: 0x2000, length: 32)))
        #expect(error?.recoverableHead == 2)
    }

    @Test("an indirect table running past the end of guest RAM is refused")
    func tableStraddlesEnd() throws {
        driver.setDescriptor(0, addr: Q.gpa(Q.ramSize - 16), len: 32, flags: DescFlag.indirect)

        #expect(try driver.popFailure(0) == .memory(head: 0, .outOfBounds(address: Q.gpa(Q.ramSize - 16), length: 32)))
    }

    @Test("a loop inside an indirect table is refused")
    func loopInTable() throws {
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 1, tableOffset: Self.tableOffset)
        driver.setDescriptor(1, addr: Q.buffer(1), len: 4, flags: DescFlag.next, next: 0, tableOffset: Self.tableOffset)
        driver.setDescriptor(4, addr: tableGPA, len: 32, flags: DescFlag.indirect)

        let error = try driver.popFailure(4)

        #expect(error == .chainTooLong(head: 4))
        #expect(error?.recoverableHead == 4)
    }

    @Test("a next index past the end of the indirect table is refused")
    func nextOutsideTable() throws {
        // The queue has 8 entries, the table 2: index 2 is inside the ring's table but not this one.
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next, next: 2, tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: tableGPA, len: 32, flags: DescFlag.indirect)

        #expect(try driver.popFailure(0) == .nextOutOfRange(head: 0, next: 2))
    }

    @Test("a readable descriptor after a writable one inside the table is refused")
    func readableAfterWritableInTable() throws {
        driver.setChain([(Q.buffer(0), 4, true), (Q.buffer(1), 4, false)], tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: tableGPA, len: 32, flags: DescFlag.indirect)

        #expect(try driver.popFailure(0) == .readableAfterWritable(head: 0))
    }

    @Test("a writable direct descriptor before a table with readable entries is refused")
    func readableInTableAfterWritableDirect() throws {
        driver.setChain([(Q.buffer(1), 4, false)], tableOffset: Self.tableOffset)
        driver.setDescriptor(0, addr: Q.buffer(0), len: 4, flags: DescFlag.next | DescFlag.write, next: 1)
        driver.setDescriptor(1, addr: tableGPA, len: 16, flags: DescFlag.indirect)

        #expect(try driver.popFailure(0) == .readableAfterWritable(head: 0))
    }

    @Test("a buffer in the table outside guest RAM is refused")
    func bufferOutsideRAM() throws {
        driver.setChain([(Q.buffer(0), 4, false), (0xdead_0000_0000, 4, true)], tableOffset: Self.tableOffset)
        driver.setDescriptor(1, addr: tableGPA, len: 32, flags: DescFlag.indirect)

        #expect(try driver.popFailure(1) == .memory(head: 1, .outOfBounds(address: 0xdead_0000_0000, length: 4)))
    }
}

@Suite("SplitVirtqueue used ring and notifications")
struct SplitVirtqueueUsedTests {
    let driver = DriverQueue()

    @Test("addUsed writes id and length into the next used slot and publishes used.idx")
    func addUsed() throws {
        let queue = try driver.makeDevice()

        queue.addUsed(head: 5, length: 123)

        #expect(driver.usedElement(0) == UsedElement(5, 123))
        #expect(driver.usedIndex == 1)
        #expect(queue.nextUsed == 1)
    }

    @Test("used slots wrap at the queue size")
    func usedSlotsWrap() throws {
        let queue = try driver.makeDevice()

        for i in 0..<9 { queue.addUsed(head: UInt16(i % 8), length: UInt32(100 + i)) }

        #expect(driver.usedElement(0) == UsedElement(0, 108))
        #expect(driver.usedElement(7) == UsedElement(7, 107))
        #expect(driver.usedIndex == 9)
    }

    @Test("used.idx wraps from 65535 to 0")
    func usedIndexWraps() throws {
        let driver = DriverQueue(startIndex: 65535)
        let queue = try driver.makeDevice()

        queue.addUsed(head: 1, length: 1)
        queue.addUsed(head: 2, length: 2)

        #expect(driver.usedIndex == 1)
        #expect(driver.usedElement(7) == UsedElement(1, 1))   // 65535 % 8
        #expect(driver.usedElement(0) == UsedElement(2, 2))
    }

    @Test("without EVENT_IDX, a new used entry needs an interrupt")
    func notifyPlain() throws {
        let queue = try driver.makeDevice()
        queue.addUsed(head: 0, length: 0)

        #expect(queue.needsNotification())
    }

    @Test("without EVENT_IDX, VRING_AVAIL_F_NO_INTERRUPT suppresses the interrupt")
    func noInterruptFlag() throws {
        let queue = try driver.makeDevice()
        driver.setAvailFlags(1)
        queue.addUsed(head: 0, length: 0)

        #expect(!queue.needsNotification())
    }

    @Test("without EVENT_IDX, used_event is ignored")
    func plainIgnoresUsedEvent() throws {
        let queue = try driver.makeDevice()
        driver.setUsedEvent(100)
        queue.addUsed(head: 0, length: 0)

        #expect(queue.needsNotification())
    }

    @Test("nothing added since the last signal needs no interrupt")
    func nothingNew() throws {
        let queue = try driver.makeDevice()
        queue.addUsed(head: 0, length: 0)
        _ = queue.needsNotification()

        #expect(!queue.needsNotification())
    }

    @Test("nothing ever added needs no interrupt, with or without EVENT_IDX", arguments: [false, true])
    func nothingAtAll(eventIndex: Bool) throws {
        let queue = try driver.makeDevice(eventIndex: eventIndex)

        #expect(!queue.needsNotification())
    }

    /// vring_need_event(event, new, old) = (u16)(new - event - 1) < (u16)(new - old): interrupt
    /// iff used_event lies in [old, new), i.e. the driver asked to hear when used.idx passes it.
    @Test("with EVENT_IDX, interrupt iff used_event is in [old, new)", arguments: [
        // (start, added, used_event, expected)
        (UInt16(0), 1, UInt16(0), true),
        (0, 1, 1, false),
        (0, 1, 5, false),
        (0, 3, 2, true),
        (0, 3, 3, false),
        (10, 4, 9, false),        // event already passed before this batch
        (10, 4, 10, true),
        (10, 4, 13, true),
        (10, 4, 14, false),
        (65534, 3, 65535, true),  // wraps: new = 1
        (65534, 3, 0, true),
        (65534, 3, 1, false),
        (65534, 3, 65533, false),
    ])
    func eventIndex(start: UInt16, added: Int, usedEvent: UInt16, expected: Bool) throws {
        let driver = DriverQueue(startIndex: start)
        let queue = try driver.makeDevice(eventIndex: true)
        driver.setUsedEvent(usedEvent)

        for _ in 0..<added { queue.addUsed(head: 0, length: 0) }

        #expect(queue.needsNotification() == expected)
    }

    @Test("with EVENT_IDX, the next batch is measured from the last check, not from the start")
    func eventIndexSecondBatch() throws {
        let queue = try driver.makeDevice(eventIndex: true)
        driver.setUsedEvent(0)
        queue.addUsed(head: 0, length: 0)
        #expect(queue.needsNotification())   // old 0, new 1

        queue.addUsed(head: 0, length: 0)    // old 1, new 2; used_event 0 is already behind

        #expect(!queue.needsNotification())
    }

    @Test("with EVENT_IDX, a suppressed check still moves the window")
    func eventIndexSuppressedMoves() throws {
        let queue = try driver.makeDevice(eventIndex: true)
        driver.setUsedEvent(5)
        queue.addUsed(head: 0, length: 0)
        #expect(!queue.needsNotification())  // old 0, new 1

        driver.setUsedEvent(0)               // 0 was in the earlier window, not in [1, 2)
        queue.addUsed(head: 0, length: 0)

        #expect(!queue.needsNotification())
    }

    @Test("with EVENT_IDX, the NO_INTERRUPT flag is ignored")
    func eventIndexIgnoresFlag() throws {
        let queue = try driver.makeDevice(eventIndex: true)
        driver.setAvailFlags(1)
        driver.setUsedEvent(0)
        queue.addUsed(head: 0, length: 0)

        #expect(queue.needsNotification())
    }

    @Test("with EVENT_IDX, enableKicks writes avail_event = nextAvail")
    func enableKicksWritesAvailEvent() throws {
        driver.setChain([(Q.buffer(0), 4, false)])
        let queue = try driver.makeDevice(eventIndex: true)
        driver.publish(0)
        driver.publish(0)
        driver.publish(0)
        _ = try pop(queue)
        _ = try pop(queue)

        _ = try queue.enableKicks()

        #expect(driver.availEvent == 2)
    }

    @Test("with EVENT_IDX, enableKicks leaves used.flags alone")
    func enableKicksEventIndexFlags() throws {
        let queue = try driver.makeDevice(eventIndex: true)
        driver.usedFlags = 1

        _ = try queue.enableKicks()

        #expect(driver.usedFlags == 1)
    }

    @Test("without EVENT_IDX, enableKicks clears VRING_USED_F_NO_NOTIFY and not avail_event")
    func enableKicksPlain() throws {
        let queue = try driver.makeDevice(eventIndex: false)
        driver.usedFlags = 1
        driver.setAvailEvent(0x5555)

        _ = try queue.enableKicks()

        #expect(driver.usedFlags == 0)
        #expect(driver.availEvent == 0x5555)
    }

    @Test("enableKicks reports chains that are already pending", arguments: [false, true])
    func enableKicksPending(eventIndex: Bool) throws {
        driver.setChain([(Q.buffer(0), 4, false)])
        let queue = try driver.makeDevice(eventIndex: eventIndex)
        let before = try queue.enableKicks()
        driver.publish(0)

        let after = try queue.enableKicks()

        #expect(!before)
        #expect(after)
    }

    @Test("enableKicks refuses an avail index jump")
    func enableKicksJump() throws {
        let queue = try driver.makeDevice(eventIndex: true)
        driver.setAvailIndex(100)

        #expect(throws: VirtqueueError.availIndexJump(from: 0, to: 100)) { try queue.enableKicks() }
    }
}

@Suite("SplitVirtqueue memory map changes")
struct SplitVirtqueueUpdateMemoryTests {
    /// A second memory map at the same guest and frontend addresses over a new mapping that holds
    /// a copy of `driver`'s RAM.
    private func copyOfRAM(_ driver: DriverQueue) -> (GuestMemory, AnonymousMapping) {
        let m = AnonymousMapping(size: Q.ramSize)
        m.base.copyMemory(from: driver.mapping.base, byteCount: Q.ramSize)
        let memory = try! GuestMemory(regions: [makeRegion(guest: Q.guestBase, size: Q.ramSize, frontend: Q.frontendBase, mapping: m)])
        return (memory, m)
    }

    @Test("after updateMemory the rings are read through the new mapping")
    func ringsRemapped() throws {
        let driver = DriverQueue()
        driver.setChain([(Q.buffer(0), 4, false)], indices: [0])
        driver.setChain([(Q.buffer(1), 8, false)], indices: [1])
        let queue = try driver.makeDevice()
        let (newMemory, newRAM) = copyOfRAM(driver)
        (newRAM.base + Q.availOffset + 4).storeBytes(of: UInt16(1), as: UInt16.self)   // ring[0] = 1
        (newRAM.base + Q.availOffset + 2).storeBytes(of: UInt16(1), as: UInt16.self)   // avail.idx = 1

        try queue.updateMemory(newMemory)
        let chain = try pop(queue)

        #expect(queue.memory === newMemory)
        #expect(chain?.head == 1)
        #expect(chain?.readableBytes == 8)
    }

    @Test("after updateMemory used entries land in the new mapping")
    func usedRemapped() throws {
        let driver = DriverQueue()
        let queue = try driver.makeDevice()
        let (newMemory, newRAM) = copyOfRAM(driver)

        try queue.updateMemory(newMemory)
        queue.addUsed(head: 3, length: 7)

        #expect((newRAM.base + Q.usedOffset + 2).load(as: UInt16.self) == 1)
        #expect(driver.usedIndex == 0)
    }

    @Test("after updateMemory descriptors are checked against the new map")
    func descriptorsCheckedAgainstNewMap() throws {
        let driver = DriverQueue()
        driver.setChain([(Q.buffer(0), 4, false)])
        let queue = try driver.makeDevice()
        // The new map has only the first 64 KiB (the rings), not the data buffers.
        let small = AnonymousMapping(size: Q.dataOffset)
        small.base.copyMemory(from: driver.mapping.base, byteCount: Q.dataOffset)
        let newMemory = try GuestMemory(regions: [makeRegion(guest: Q.guestBase, size: Q.dataOffset,
                                                             frontend: Q.frontendBase, mapping: small)])
        try queue.updateMemory(newMemory)
        (small.base + Q.availOffset + 2).storeBytes(of: UInt16(1), as: UInt16.self)

        #expect(popError(queue) == .memory(head: 0, .outOfBounds(address: Q.buffer(0), length: 4)))
    }

    @Test("a map without the rings is refused and the old map stays in use")
    func refusedKeepsOld() throws {
        let driver = DriverQueue()
        driver.setChain([(Q.buffer(0), 4, false)])
        let queue = try driver.makeDevice()
        let elsewhere = try GuestMemory(regions: [makeRegion(guest: 0, size: 0x10000, frontend: 0x1000_0000)])

        #expect(throws: GuestMemoryError.self) { try queue.updateMemory(elsewhere) }
        driver.publish(0)

        #expect(queue.memory === driver.memory)
        #expect(try pop(queue)?.head == 0)
    }
}

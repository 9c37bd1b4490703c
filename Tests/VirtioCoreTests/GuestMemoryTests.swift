import Testing
import VirtioCore
import VGPUTestSupport

@Suite("GuestMemory construction")
struct GuestMemoryInitTests {
    @Test("an empty region list is a valid (empty) map")
    func emptyList() throws {
        let memory = try GuestMemory(regions: [])

        #expect(memory.regions.isEmpty)
        #expect(memory.totalSize == 0)
    }

    @Test("regions are sorted by guest address")
    func sorted() throws {
        let regions = [fakeRegion(guest: 0x30000, size: 0x1000), fakeRegion(guest: 0x10000, size: 0x1000),
                       fakeRegion(guest: 0x20000, size: 0x1000)]

        let memory = try GuestMemory(regions: regions)

        #expect(memory.regions.map(\.guestStart.raw) == [0x10000, 0x20000, 0x30000])
    }

    @Test("totalSize sums every region")
    func totalSize() throws {
        let memory = try GuestMemory(regions: [fakeRegion(guest: 0, size: 0x1000), fakeRegion(guest: 0x10000, size: 0x3000)])

        #expect(memory.totalSize == 0x4000)
    }

    @Test("adjacent regions (one ends where the next starts) are accepted")
    func adjacentAccepted() throws {
        let memory = try GuestMemory(regions: [fakeRegion(guest: 0x1000, size: 0x1000), fakeRegion(guest: 0x2000, size: 0x1000)])

        #expect(memory.regions.count == 2)
    }

    @Test("regions whose frontend ranges overlap are rejected (vring translation would be ambiguous)")
    func frontendOverlap() {
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0x1000, size: 0x2000, frontend: 0x10_0000),
                                      fakeRegion(guest: 0x8000, size: 0x1000, frontend: 0x10_1000)])
        }
    }

    @Test("an empty region is rejected")
    func emptyRegion() {
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0x1000, size: 0x1000), fakeRegion(guest: 0x4000, size: 0)])
        }
    }

    @Test("partially overlapping regions are rejected")
    func overlapping() {
        let error = #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0x2000, size: 0x1000), fakeRegion(guest: 0x1000, size: 0x1001)])
        }
        #expect(isInvalidRegion(error))
    }

    @Test("two regions starting at the same address are rejected")
    func sameStart() {
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0x1000, size: 0x1000), fakeRegion(guest: 0x1000, size: 0x1000)])
        }
    }

    @Test("a region inside a larger one is rejected")
    func contained() {
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0, size: 0x10_0000), fakeRegion(guest: 0x8000, size: 0x1000),
                                      fakeRegion(guest: 0x20_0000, size: 0x1000)])
        }
    }

    @Test("a large region covering a later, non-neighbouring one is rejected")
    func overlapAcrossNeighbour() {
        // Sorted: A [0, 0x10000), B [0x1000, 0x2000), C [0x8000, 0x9000): A overlaps both.
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0x8000, size: 0x1000), fakeRegion(guest: 0, size: 0x10000),
                                      fakeRegion(guest: 0x1000, size: 0x1000)])
        }
    }

    @Test("a region whose guest range wraps past 2^64 is rejected")
    func guestWrap() {
        let error = #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: UInt64.max - 0xfff, size: 0x2000)])
        }
        #expect(isInvalidRegion(error))
    }

    @Test("a region whose frontend range wraps past 2^64 is rejected")
    func frontendWrap() {
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0x1000, size: 0x2000, frontend: UInt64.max - 0xfff)])
        }
    }

    @Test("a region larger than Int.max bytes is rejected")
    func tooLarge() {
        #expect(throws: GuestMemoryError.self) {
            try GuestMemory(regions: [fakeRegion(guest: 0, size: UInt64(Int.max) + 1)])
        }
    }

    @Test("a region ending exactly at 2^64 - 1 is accepted and its last byte is addressable")
    func regionAtTop() throws {
        let memory = try GuestMemory(regions: [makeRegion(guest: UInt64.max - 0x1000, size: 0x1000, frontend: 0x1000)])

        let p = try memory.hostPointer(GuestPhysicalAddress(UInt64.max - 1), length: 1)

        #expect(p == memory.regions[0].hostBase + 0xfff)
    }

    private func isInvalidRegion(_ error: GuestMemoryError?) -> Bool {
        if case .invalidRegion = error { true } else { false }
    }
}

/// Two separately mapped regions: A = [0x10000, 0x11000) and B right after it, [0x11000, 0x12000);
/// a hole; then C = [0x20000, 0x21000). Host mappings are separate, so spanning A and B only works
/// if accesses are split per region.
struct ThreeRegions {
    let a = AnonymousMapping(size: 0x1000)
    let b = AnonymousMapping(size: 0x1000)
    let c = AnonymousMapping(size: 0x1000)
    let memory: GuestMemory

    init() {
        memory = try! GuestMemory(regions: [
            makeRegion(guest: 0x20000, size: 0x1000, frontend: 0x7000_0000, mapping: c),
            makeRegion(guest: 0x10000, size: 0x1000, frontend: 0x9000_0000, mapping: a),
            makeRegion(guest: 0x11000, size: 0x1000, frontend: 0x8000_0000, mapping: b),
        ])
    }
}

@Suite("GuestMemory host pointers")
struct GuestMemoryHostPointerTests {
    let ram = ThreeRegions()

    @Test("an in-region range maps to the region's host base plus offset")
    func inRegion() throws {
        let p = try ram.memory.hostPointer(GuestPhysicalAddress(0x11234), length: 16)

        #expect(p == ram.b.base + 0x234)
    }

    @Test("a range ending exactly at the region end is accepted")
    func endsAtRegionEnd() throws {
        let p = try ram.memory.hostPointer(GuestPhysicalAddress(0x20ff0), length: 16)

        #expect(p == ram.c.base + 0xff0)
    }

    @Test("a range one byte past the region end is rejected")
    func pastRegionEnd() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x20ff0, length: 17)) {
            try ram.memory.hostPointer(GuestPhysicalAddress(0x20ff0), length: 17)
        }
    }

    @Test("an address in the hole between regions is rejected")
    func inHole() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x18000, length: 4)) {
            try ram.memory.hostPointer(GuestPhysicalAddress(0x18000), length: 4)
        }
    }

    @Test("an address below the first region is rejected")
    func belowFirst() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0xfff0, length: 4)) {
            try ram.memory.hostPointer(GuestPhysicalAddress(0xfff0), length: 4)
        }
    }

    @Test("a range running from a region into the hole is rejected")
    func intoHole() {
        #expect(throws: GuestMemoryError.self) {
            try ram.memory.hostPointer(GuestPhysicalAddress(0x11ff0), length: 0x20)
        }
    }

    @Test("hostPointer wants one region: a range over two adjacent regions is rejected")
    func spansAdjacent() {
        #expect(throws: GuestMemoryError.self) {
            try ram.memory.hostPointer(GuestPhysicalAddress(0x10ff0), length: 0x20)
        }
    }

    @Test("a length that wraps the address past 2^64 is an overflow")
    func lengthOverflow() {
        #expect(throws: GuestMemoryError.overflow(address: UInt64.max - 8, length: 16)) {
            try ram.memory.hostPointer(GuestPhysicalAddress(UInt64.max - 8), length: 16)
        }
    }

    @Test("Int.max bytes from a mapped address is an overflow or out of bounds, never a trap")
    func hugeLength() {
        #expect(throws: GuestMemoryError.self) {
            try ram.memory.hostPointer(GuestPhysicalAddress(0x10000), length: Int.max)
        }
    }

    @Test("a negative length is rejected")
    func negativeLength() {
        #expect(throws: GuestMemoryError.overflow(address: 0x10000, length: -1)) {
            try ram.memory.hostPointer(GuestPhysicalAddress(0x10000), length: -1)
        }
    }

    @Test("locate returns the holding region and the offset in it")
    func locate() throws {
        let (region, offset) = try ram.memory.locate(GuestPhysicalAddress(0x11800), length: 0x800)

        #expect(region.guestStart.raw == 0x11000)
        #expect(offset == 0x800)
    }

    @Test("locate rejects a range past the region end")
    func locatePastEnd() {
        #expect(throws: GuestMemoryError.self) { try ram.memory.locate(GuestPhysicalAddress(0x11800), length: 0x801) }
    }

    @Test("validate accepts a range over adjacent regions")
    func validateAdjacent() throws {
        try ram.memory.validate(GuestPhysicalAddress(0x10800), length: 0x1000)
    }

    @Test("validate rejects a range over the hole")
    func validateHole() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x11800, length: 0x1000)) {
            try ram.memory.validate(GuestPhysicalAddress(0x11800), length: 0x1000)
        }
    }

    @Test("validate rejects a negative length")
    func validateNegative() {
        #expect(throws: GuestMemoryError.self) { try ram.memory.validate(GuestPhysicalAddress(0x10000), length: -5) }
    }
}

@Suite("GuestMemory frontend address translation")
struct FrontendTranslationTests {
    let ram = ThreeRegions()

    @Test("a frontend address maps into the region that holds it, not by guest order")
    func translates() throws {
        // Frontend order (C, B, A) is the reverse of guest order (A, B, C).
        let p = try ram.memory.hostPointer(FrontendVirtualAddress(0x9000_0010), length: 0x10)

        #expect(p == ram.a.base + 0x10)
    }

    @Test("a frontend range ending at the region end is accepted")
    func endsAtEnd() throws {
        let p = try ram.memory.hostPointer(FrontendVirtualAddress(0x7000_0f00), length: 0x100)

        #expect(p == ram.c.base + 0xf00)
    }

    @Test("a frontend range past the region end is rejected")
    func pastEnd() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x7000_0f00, length: 0x101)) {
            try ram.memory.hostPointer(FrontendVirtualAddress(0x7000_0f00), length: 0x101)
        }
    }

    @Test("an unmapped frontend address is rejected")
    func unmapped() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x20000, length: 1)) {
            try ram.memory.hostPointer(FrontendVirtualAddress(0x20000), length: 1)
        }
    }

    @Test("a guest address is not a frontend address")
    func guestAddressNotTranslated() {
        #expect(throws: GuestMemoryError.self) { try ram.memory.hostPointer(FrontendVirtualAddress(0x10000), length: 1) }
    }

    @Test("a frontend length that wraps past 2^64 is an overflow")
    func overflow() {
        #expect(throws: GuestMemoryError.overflow(address: UInt64.max, length: 1)) {
            try ram.memory.hostPointer(FrontendVirtualAddress(UInt64.max), length: 1)
        }
    }

    @Test("a negative frontend length is rejected")
    func negative() {
        #expect(throws: GuestMemoryError.overflow(address: 0x9000_0000, length: -1)) {
            try ram.memory.hostPointer(FrontendVirtualAddress(0x9000_0000), length: -1)
        }
    }
}

@Suite("GuestMemory read, write, load, store")
struct GuestMemoryAccessTests {
    let ram = ThreeRegions()

    @Test("read copies bytes from one region")
    func readOne() throws {
        ram.c.setBytes(pattern(32), at: 0x100)
        var out = [UInt8](repeating: 0, count: 32)

        try out.withUnsafeMutableBytes { try ram.memory.read(into: $0, from: GuestPhysicalAddress(0x20100)) }

        #expect(out == pattern(32))
    }

    @Test("read spans two adjacent regions")
    func readAdjacent() throws {
        ram.a.setBytes(pattern(16), at: 0xff0)
        ram.b.setBytes(pattern(16, seed: 16), at: 0)
        var out = [UInt8](repeating: 0, count: 32)

        try out.withUnsafeMutableBytes { try ram.memory.read(into: $0, from: GuestPhysicalAddress(0x10ff0)) }

        #expect(out == pattern(32))
    }

    @Test("read spanning the hole throws")
    func readHole() {
        var out = [UInt8](repeating: 0, count: 32)

        #expect(throws: GuestMemoryError.outOfBounds(address: 0x11ff0, length: 32)) {
            try out.withUnsafeMutableBytes { try ram.memory.read(into: $0, from: GuestPhysicalAddress(0x11ff0)) }
        }
    }

    @Test("write spans two adjacent regions")
    func writeAdjacent() throws {
        let bytes = pattern(32)

        try bytes.withUnsafeBytes { try ram.memory.write($0, to: GuestPhysicalAddress(0x10ff0)) }

        #expect(ram.a.bytes(at: 0xff0, count: 16) == Array(bytes[0..<16]))
        #expect(ram.b.bytes(at: 0, count: 16) == Array(bytes[16..<32]))
    }

    @Test("write spanning the hole throws and writes nothing")
    func writeHoleNoPartial() {
        ram.b.fill(0xee)

        #expect(throws: GuestMemoryError.self) {
            try pattern(32).withUnsafeBytes { try ram.memory.write($0, to: GuestPhysicalAddress(0x11ff0)) }
        }
        #expect(ram.b.bytes(at: 0xff0, count: 16) == [UInt8](repeating: 0xee, count: 16))
    }

    @Test("write over three regions with a hole at the end writes nothing, even in the first two")
    func writeAdjacentThenHoleNoPartial() {
        ram.a.fill(0xee)
        ram.b.fill(0xee)

        #expect(throws: GuestMemoryError.self) {
            // A's last 0x100 bytes, all of B, then one byte at 0x12000 in the hole.
            try pattern(0x1101).withUnsafeBytes { try ram.memory.write($0, to: GuestPhysicalAddress(0x10f00)) }
        }
        #expect(ram.a.bytes(at: 0, count: 0x1000).allSatisfy { $0 == 0xee })
        #expect(ram.b.bytes(at: 0, count: 0x1000).allSatisfy { $0 == 0xee })
    }

    @Test("write whose address + length wraps is an overflow")
    func writeOverflow() {
        #expect(throws: GuestMemoryError.overflow(address: UInt64.max - 1, length: 4)) {
            try [UInt8](repeating: 1, count: 4).withUnsafeBytes { try ram.memory.write($0, to: GuestPhysicalAddress(UInt64.max - 1)) }
        }
    }

    @Test("store then load round-trips at an unaligned address")
    func storeLoadUnaligned() throws {
        let address = GuestPhysicalAddress(0x20003)

        try ram.memory.store(UInt64(0x0102_0304_0506_0708), to: address)
        let value = try ram.memory.load(UInt64.self, from: address)

        #expect(value == 0x0102_0304_0506_0708)
        #expect(ram.c.bytes(at: 3, count: 8) == [8, 7, 6, 5, 4, 3, 2, 1])   // little-endian in guest RAM
    }

    @Test("load of a value that spans two adjacent regions reads both halves")
    func loadAdjacent() throws {
        ram.a.setBytes([1, 2, 3, 4], at: 0xffc)
        ram.b.setBytes([5, 6, 7, 8], at: 0)

        let value = try ram.memory.load(UInt64.self, from: GuestPhysicalAddress(0x10ffc))

        #expect(value == 0x0807_0605_0403_0201)
    }

    @Test("store of a value that spans two adjacent regions writes both halves")
    func storeAdjacent() throws {
        try ram.memory.store(UInt64(0x0807_0605_0403_0201), to: GuestPhysicalAddress(0x10ffc))

        #expect(ram.a.bytes(at: 0xffc, count: 4) == [1, 2, 3, 4])
        #expect(ram.b.bytes(at: 0, count: 4) == [5, 6, 7, 8])
    }

    @Test("load past the end of RAM throws")
    func loadOutOfBounds() {
        #expect(throws: GuestMemoryError.outOfBounds(address: 0x20ffc, length: 8)) {
            try ram.memory.load(UInt64.self, from: GuestPhysicalAddress(0x20ffc))
        }
    }

    @Test("store straddling the hole throws and writes nothing")
    func storeHoleNoPartial() {
        ram.b.fill(0)

        #expect(throws: GuestMemoryError.self) {
            try ram.memory.store(UInt64.max, to: GuestPhysicalAddress(0x11ffc))
        }
        #expect(ram.b.bytes(at: 0xffc, count: 4) == [0, 0, 0, 0])
    }

    @Test("a zero-length read of mapped memory succeeds")
    func zeroLength() throws {
        var out: [UInt8] = []
        try out.withUnsafeMutableBytes { try ram.memory.read(into: $0, from: GuestPhysicalAddress(0x10000)) }
        #expect(out.isEmpty)
    }
}

import CShims
import Testing
import VirtioCore

private typealias Q = DriverQueue

/// Guest RAM with helpers to lay out chains by hand (no ring involved).
private struct ChainRAM {
    let driver = DriverQueue()
    var memory: GuestMemory { driver.memory }

    /// Region offset of guest address `gpa`.
    func offset(_ gpa: UInt64) -> Int { Int(gpa - Q.guestBase) }

    func put(_ bytes: [UInt8], at gpa: UInt64) { driver.mapping.setBytes(bytes, at: offset(gpa)) }
    func get(_ gpa: UInt64, _ count: Int) -> [UInt8] { driver.mapping.bytes(at: offset(gpa), count: count) }

    /// A chain of readable descriptors holding `pieces` (each at its own buffer, at an odd offset),
    /// followed by writable descriptors of `writable` lengths (zero-filled).
    func chain(readable pieces: [[UInt8]], writable: [UInt32] = []) -> DescriptorChain {
        var descriptors: [Descriptor] = []
        for (i, piece) in pieces.enumerated() {
            let gpa = Q.buffer(i) + 3
            put(piece, at: gpa)
            descriptors.append(Descriptor(address: GuestPhysicalAddress(gpa), length: UInt32(piece.count), isWritable: false))
        }
        for (j, len) in writable.enumerated() {
            let gpa = Q.buffer(pieces.count + j) + 5
            put([UInt8](repeating: 0, count: Int(len)), at: gpa)
            descriptors.append(Descriptor(address: GuestPhysicalAddress(gpa), length: len, isWritable: true))
        }
        return DescriptorChain(head: 0, descriptors: descriptors)
    }
}

private func read(_ reader: inout ChainReader, _ count: Int) throws(ChainError) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var failure: ChainError?
    out.withUnsafeMutableBytes { buffer in
        do throws(ChainError) { try reader.read(into: buffer) } catch { failure = error }
    }
    if let failure { throw failure }
    return out
}

private func write(_ writer: inout ChainWriter, _ bytes: [UInt8]) throws(ChainError) {
    var failure: ChainError?
    bytes.withUnsafeBytes { buffer in
        do throws(ChainError) { try writer.write(buffer) } catch { failure = error }
    }
    if let failure { throw failure }
}

@Suite("ChainReader")
struct ChainReaderTests {
    private let ram = ChainRAM()

    @Test("a read runs across descriptor boundaries")
    func acrossBoundaries() throws {
        let message = pattern(12)
        let chain = ram.chain(readable: [Array(message[0..<3]), Array(message[3..<8]), Array(message[8..<12])])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        let bytes = try read(&reader, 12)

        #expect(bytes == message)
        #expect(reader.remaining == 0)
    }

    @Test("successive reads continue where the last stopped, mid-descriptor")
    func successiveReads() throws {
        let message = pattern(12)
        let chain = ram.chain(readable: [Array(message[0..<3]), Array(message[3..<8]), Array(message[8..<12])])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        let a = try read(&reader, 4)
        let b = try read(&reader, 6)
        let c = try read(&reader, 2)

        #expect(a + b + c == message)
    }

    @Test("remaining counts only the readable part")
    func remainingReadableOnly() {
        let chain = ram.chain(readable: [pattern(10)], writable: [100])

        let reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(reader.remaining == 10)
    }

    @Test("reading into the writable part is a short read")
    func notIntoWritable() {
        let chain = ram.chain(readable: [pattern(10)], writable: [100])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.shortRead(wanted: 11, available: 10)) { try read(&reader, 11) }
    }

    @Test("peekObject does not move the cursor")
    func peekDoesNotMove() throws {
        let chain = ram.chain(readable: [[1, 0, 0, 0, 2, 0, 0, 0]])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        let peeked = try reader.peekObject(UInt32.self)
        let read = try reader.readObject(UInt32.self)

        #expect(peeked == 1)
        #expect(read == 1)
        #expect(reader.remaining == 4)
    }

    @Test("a short read throws with what was wanted and what is left")
    func shortRead() throws {
        let chain = ram.chain(readable: [pattern(4), pattern(4, seed: 4)])
        var reader = ChainReader(chain: chain, memory: ram.memory)
        _ = try read(&reader, 3)

        #expect(throws: ChainError.shortRead(wanted: 6, available: 5)) { try read(&reader, 6) }
    }

    @Test("a short read does not move the cursor")
    func shortReadDoesNotMove() throws {
        let chain = ram.chain(readable: [pattern(4), pattern(4, seed: 4)])
        var reader = ChainReader(chain: chain, memory: ram.memory)
        _ = try read(&reader, 3)

        _ = try? read(&reader, 6)
        let rest = try read(&reader, 5)

        #expect(rest == pattern(5, seed: 3))
    }

    @Test("a short readObject does not move the cursor")
    func shortReadObjectDoesNotMove() throws {
        let chain = ram.chain(readable: [pattern(6)])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.shortRead(wanted: 8, available: 6)) { try reader.readObject(UInt64.self) }
        #expect(reader.remaining == 6)
        #expect(try reader.readObject(UInt16.self) == 0x0100)
    }

    @Test("skip moves the cursor across descriptors")
    func skip() throws {
        let chain = ram.chain(readable: [pattern(3), pattern(5, seed: 3)])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        try reader.skip(4)

        #expect(try read(&reader, 4) == pattern(4, seed: 4))
    }

    @Test("skipping past the end throws and does not move")
    func skipTooFar() throws {
        let chain = ram.chain(readable: [pattern(8)])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.shortRead(wanted: 9, available: 8)) { try reader.skip(9) }
        #expect(try read(&reader, 8) == pattern(8))
    }

    @Test("a negative skip is refused")
    func negativeSkip() {
        let chain = ram.chain(readable: [pattern(8)])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.self) { try reader.skip(-1) }
        #expect(reader.remaining == 8)
    }

    @Test("zero-length descriptors in the middle are passed over")
    func zeroLengthDescriptors() throws {
        let chain = ram.chain(readable: [pattern(2), [], [], pattern(2, seed: 2), []])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(try read(&reader, 4) == pattern(4))
    }

    @Test("readObject reads a C struct at an unaligned guest address")
    func readCStructUnaligned() throws {
        var bytes: [UInt8] = []
        bytes += [0x01, 0x01, 0, 0]                                   // type 0x0101
        bytes += [1, 0, 0, 0]                                         // flags: FENCE
        bytes += [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]     // fence_id
        bytes += [7, 0, 0, 0]                                         // ctx_id
        bytes += [3, 0, 0, 0]                                         // ring_idx, padding
        let chain = ram.chain(readable: [bytes])                      // at buffer + 3: unaligned
        var reader = ChainReader(chain: chain, memory: ram.memory)

        let header = try reader.readObject(virtio_gpu_ctrl_hdr.self)

        #expect(chain.descriptors[0].address.raw % 8 == 3)
        #expect(header.type == 0x0101)
        #expect(header.flags == 1)
        #expect(header.fence_id == 0x1122_3344_5566_7788)
        #expect(header.ctx_id == 7)
        #expect(header.ring_idx == 3)
        #expect(reader.remaining == 0)
    }

    @Test("readObject reads a value split over two descriptors")
    func readObjectSplit() throws {
        let chain = ram.chain(readable: [[0x88, 0x77, 0x66], [0x55, 0x44, 0x33, 0x22, 0x11]])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(try reader.readObject(UInt64.self) == 0x1122_3344_5566_7788)
    }

    @Test("a descriptor outside guest RAM makes the read throw without moving")
    func memoryError() throws {
        let chain = DescriptorChain(head: 0, descriptors: [
            Descriptor(address: GuestPhysicalAddress(Q.buffer(0)), length: 4, isWritable: false),
            Descriptor(address: GuestPhysicalAddress(0x10), length: 4, isWritable: false),
        ])
        var reader = ChainReader(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.memory(.outOfBounds(address: 0x10, length: 4))) { try read(&reader, 8) }
        #expect(reader.remaining == 8)
    }

    @Test("after a failed read the next read starts from the same place")
    func memoryErrorThenRead() throws {
        ram.put([1, 2, 3, 4], at: Q.buffer(0))
        let chain = DescriptorChain(head: 0, descriptors: [
            Descriptor(address: GuestPhysicalAddress(Q.buffer(0)), length: 4, isWritable: false),
            Descriptor(address: GuestPhysicalAddress(0x10), length: 4, isWritable: false),
        ])
        var reader = ChainReader(chain: chain, memory: ram.memory)
        _ = try? read(&reader, 8)

        let first = try read(&reader, 4)

        #expect(first == [1, 2, 3, 4])
    }
}

@Suite("ChainWriter")
struct ChainWriterTests {
    private let ram = ChainRAM()

    @Test("the writer starts at the first writable descriptor and leaves readable ones alone")
    func startsAtWritable() throws {
        let chain = ram.chain(readable: [pattern(8)], writable: [8])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        try write(&writer, [9, 9, 9, 9])

        #expect(ram.get(chain.descriptors[0].address.raw, 8) == pattern(8))
        #expect(ram.get(chain.descriptors[1].address.raw, 4) == [9, 9, 9, 9])
    }

    @Test("a write runs across two writable descriptors")
    func acrossTwo() throws {
        let chain = ram.chain(readable: [], writable: [5, 11])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        try write(&writer, pattern(16))

        #expect(ram.get(chain.descriptors[0].address.raw, 5) == pattern(5))
        #expect(ram.get(chain.descriptors[1].address.raw, 11) == pattern(11, seed: 5))
    }

    @Test("successive writes continue mid-descriptor")
    func successive() throws {
        let chain = ram.chain(readable: [], writable: [5, 11])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        try write(&writer, pattern(3))
        try write(&writer, pattern(4, seed: 3))

        #expect(ram.get(chain.descriptors[0].address.raw, 5) == pattern(5))
        #expect(ram.get(chain.descriptors[1].address.raw, 2) == pattern(2, seed: 5))
        #expect(writer.bytesWritten == 7)
        #expect(writer.available == 9)
    }

    @Test("available starts at the chain's writable bytes")
    func availableAtStart() {
        let chain = ram.chain(readable: [pattern(100)], writable: [5, 11])

        let writer = ChainWriter(chain: chain, memory: ram.memory)

        #expect(writer.available == 16)
        #expect(writer.bytesWritten == 0)
    }

    @Test("a write longer than the writable part throws")
    func tooLongThrows() {
        let chain = ram.chain(readable: [], writable: [5, 11])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.shortWrite(wanted: 17, available: 16)) { try write(&writer, pattern(17)) }
    }

    @Test("a write that is too long writes nothing and does not move")
    func tooLongWritesNothing() throws {
        let chain = ram.chain(readable: [], writable: [5, 11])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        _ = try? write(&writer, pattern(17))

        #expect(ram.get(chain.descriptors[0].address.raw, 5) == [0, 0, 0, 0, 0])
        #expect(ram.get(chain.descriptors[1].address.raw, 11).allSatisfy { $0 == 0 })
        #expect(writer.bytesWritten == 0)
        try write(&writer, [1])
        #expect(ram.get(chain.descriptors[0].address.raw, 1) == [1])
    }

    @Test("a chain without writable descriptors takes no bytes")
    func noWritable() throws {
        let chain = ram.chain(readable: [pattern(4)])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        try write(&writer, [])

        #expect(writer.available == 0)
        #expect(throws: ChainError.shortWrite(wanted: 1, available: 0)) { try write(&writer, [1]) }
    }

    @Test("writeObject stores the value's bytes, little-endian")
    func writeObject() throws {
        let chain = ram.chain(readable: [], writable: [3, 5])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        try writer.writeObject(UInt64(0x1122_3344_5566_7788))

        #expect(ram.get(chain.descriptors[0].address.raw, 3) == [0x88, 0x77, 0x66])
        #expect(ram.get(chain.descriptors[1].address.raw, 5) == [0x55, 0x44, 0x33, 0x22, 0x11])
        #expect(writer.bytesWritten == 8)
    }

    @Test("writeObject of a C struct round-trips through a reader")
    func writeObjectCStruct() throws {
        let chain = ram.chain(readable: [], writable: [7, 17])
        var writer = ChainWriter(chain: chain, memory: ram.memory)
        var header = virtio_gpu_ctrl_hdr()
        header.type = 0x1100
        header.fence_id = 42
        header.ring_idx = 2

        try writer.writeObject(header)
        let readBack = DescriptorChain(head: 0, descriptors: chain.descriptors.map {
            Descriptor(address: $0.address, length: $0.length, isWritable: false)
        })
        var reader = ChainReader(chain: readBack, memory: ram.memory)
        let copy = try reader.readObject(virtio_gpu_ctrl_hdr.self)

        #expect(copy.type == 0x1100)
        #expect(copy.fence_id == 42)
        #expect(copy.ring_idx == 2)
    }

    @Test("writeObject that does not fit throws and writes nothing")
    func writeObjectTooLong() {
        let chain = ram.chain(readable: [], writable: [4])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.shortWrite(wanted: 8, available: 4)) { try writer.writeObject(UInt64.max) }
        #expect(ram.get(chain.descriptors[0].address.raw, 4) == [0, 0, 0, 0])
    }

    @Test("a writable descriptor outside guest RAM: the write throws, writes nothing, and does not move")
    func memoryErrorWritesNothing() throws {
        let good = Q.buffer(0)
        ram.put([0, 0, 0, 0], at: good)
        let chain = DescriptorChain(head: 0, descriptors: [
            Descriptor(address: GuestPhysicalAddress(good), length: 4, isWritable: true),
            Descriptor(address: GuestPhysicalAddress(0x10), length: 4, isWritable: true),
        ])
        var writer = ChainWriter(chain: chain, memory: ram.memory)

        #expect(throws: ChainError.memory(.outOfBounds(address: 0x10, length: 4))) { try write(&writer, pattern(8, seed: 1)) }
        #expect(ram.get(good, 4) == [0, 0, 0, 0])
        #expect(writer.bytesWritten == 0)
        try write(&writer, [7, 7])
        #expect(ram.get(good, 4) == [7, 7, 0, 0])
    }
}

/// Same message, every split point: a decoder must not care where descriptor boundaries fall
/// (swift-nio's split-at-every-byte habit).
@Suite("Chain cursors at every split point")
struct ChainSplitTests {
    static let message = pattern(64, seed: 17)

    /// Publishes a two-descriptor chain holding `message` split at `split` and pops it through
    /// the queue, so the walker sees the zero-length edge cases too.
    private func poppedChain(_ driver: DriverQueue, split: Int, writable: Bool) throws -> DescriptorChain {
        let first = Q.buffer(0) + 1     // odd, unaligned addresses
        let second = Q.buffer(1) + 7
        if !writable {
            driver.mapping.setBytes(Array(Self.message[0..<split]), at: Int(first - Q.guestBase))
            driver.mapping.setBytes(Array(Self.message[split...]), at: Int(second - Q.guestBase))
        }
        driver.setChain([(first, UInt32(split), writable), (second, UInt32(64 - split), writable)], indices: [2, 5])
        let queue = try driver.makeDevice()
        driver.publish(2)
        return try #require(try pop(queue))
    }

    @Test("one read of 64 bytes gives the message for every split", arguments: 0...64)
    func wholeRead(split: Int) throws {
        let driver = DriverQueue()
        let chain = try poppedChain(driver, split: split, writable: false)
        var reader = ChainReader(chain: chain, memory: driver.memory)

        #expect(try read(&reader, 64) == Self.message)
    }

    @Test("byte-at-a-time reads give the message for every split")
    func byteReads() throws {
        for split in 0...64 {
            let driver = DriverQueue()
            let chain = try poppedChain(driver, split: split, writable: false)
            var reader = ChainReader(chain: chain, memory: driver.memory)
            var out: [UInt8] = []

            while reader.remaining > 0 { out += try read(&reader, 1) }

            #expect(out == Self.message, "split at \(split)")
        }
    }

    @Test("header object, peek, skip and rest give the message for every split")
    func objectReads() throws {
        for split in 0...64 {
            let driver = DriverQueue()
            let chain = try poppedChain(driver, split: split, writable: false)
            var reader = ChainReader(chain: chain, memory: driver.memory)

            let peeked = try reader.peekObject(virtio_gpu_ctrl_hdr.self)
            let header = try reader.readObject(virtio_gpu_ctrl_hdr.self)
            let word = try reader.readObject(UInt32.self)
            try reader.skip(5)
            let rest = try read(&reader, reader.remaining)

            let expectedHeader = Self.message.withUnsafeBytes { $0.loadUnaligned(as: virtio_gpu_ctrl_hdr.self) }
            let expectedWord = Self.message.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 24, as: UInt32.self) }
            #expect(peeked.fence_id == expectedHeader.fence_id && header.fence_id == expectedHeader.fence_id, "split at \(split)")
            #expect(header.type == expectedHeader.type && header.ctx_id == expectedHeader.ctx_id, "split at \(split)")
            #expect(word == expectedWord, "split at \(split)")
            #expect(rest == Array(Self.message[33...]), "split at \(split)")
        }
    }

    @Test("reads in 7-byte pieces over a three-way split give the message for every pair of split points")
    func threeWaySplit() throws {
        let driver = DriverQueue()
        let buffers = [Q.buffer(0) + 1, Q.buffer(1) + 2, Q.buffer(2) + 3]
        for a in 0...64 {
            for b in a...64 {
                let pieces = [Array(Self.message[0..<a]), Array(Self.message[a..<b]), Array(Self.message[b...])]
                for (gpa, piece) in zip(buffers, pieces) { driver.mapping.setBytes(piece, at: Int(gpa - Q.guestBase)) }
                let chain = DescriptorChain(head: 0, descriptors: zip(buffers, pieces).map {
                    Descriptor(address: GuestPhysicalAddress($0), length: UInt32($1.count), isWritable: false)
                })
                var reader = ChainReader(chain: chain, memory: driver.memory)
                var out: [UInt8] = []

                while reader.remaining > 0 { out += try read(&reader, min(7, reader.remaining)) }

                #expect(out == Self.message, "split at \(a), \(b)")
            }
        }
    }

    @Test("one write of 64 bytes lands split correctly for every split", arguments: 0...64)
    func wholeWrite(split: Int) throws {
        let driver = DriverQueue()
        let chain = try poppedChain(driver, split: split, writable: true)
        var writer = ChainWriter(chain: chain, memory: driver.memory)

        try write(&writer, Self.message)

        let first = driver.mapping.bytes(at: Int(Q.buffer(0) + 1 - Q.guestBase), count: split)
        let second = driver.mapping.bytes(at: Int(Q.buffer(1) + 7 - Q.guestBase), count: 64 - split)
        #expect(first + second == Self.message)
        #expect(writer.available == 0)
    }

    @Test("byte-at-a-time writes land split correctly for every split")
    func byteWrites() throws {
        for split in 0...64 {
            let driver = DriverQueue()
            let chain = try poppedChain(driver, split: split, writable: true)
            var writer = ChainWriter(chain: chain, memory: driver.memory)

            for byte in Self.message { try write(&writer, [byte]) }

            let first = driver.mapping.bytes(at: Int(Q.buffer(0) + 1 - Q.guestBase), count: split)
            let second = driver.mapping.bytes(at: Int(Q.buffer(1) + 7 - Q.guestBase), count: 64 - split)
            #expect(first + second == Self.message, "split at \(split)")
        }
    }
}

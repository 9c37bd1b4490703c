/// One buffer of a descriptor chain: a guest range the device reads or writes.
public struct Descriptor: Equatable, Sendable {
    public let address: GuestPhysicalAddress
    public let length: UInt32
    public let isWritable: Bool

    public init(address: GuestPhysicalAddress, length: UInt32, isWritable: Bool) {
        self.address = address
        self.length = length
        self.isWritable = isWritable
    }
}

/// A descriptor chain popped from the available ring, indirect tables flattened.
/// Readable descriptors all come before writable ones (checked when walked).
public struct DescriptorChain: Sendable {
    /// Head index: what goes back into the used ring.
    public internal(set) var head: UInt16 = 0
    public internal(set) var descriptors: [Descriptor] = []
    /// Bytes the device may read / write, summed over the chain.
    public internal(set) var readableBytes: Int = 0
    public internal(set) var writableBytes: Int = 0

    public init() { descriptors.reserveCapacity(16) }

    /// Builds a chain directly (tests, and frontends that already know the buffers).
    public init(head: UInt16, descriptors: [Descriptor]) {
        self.head = head
        self.descriptors = descriptors
        for d in descriptors {
            if d.isWritable { writableBytes += Int(d.length) } else { readableBytes += Int(d.length) }
        }
    }

    mutating func reset(head: UInt16) {
        self.head = head
        descriptors.removeAll(keepingCapacity: true)
        readableBytes = 0
        writableBytes = 0
    }
}

/// Errors reading or writing through a chain.
public enum ChainError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The chain holds fewer readable bytes than asked for.
    case shortRead(wanted: Int, available: Int)
    /// The chain holds fewer writable bytes than needed.
    case shortWrite(wanted: Int, available: Int)
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case let .shortRead(w, a): "chain too short: wanted \(w) readable bytes, has \(a)"
        case let .shortWrite(w, a): "chain too short: wanted \(w) writable bytes, has \(a)"
        case let .memory(e): e.description
        }
    }
}

/// A cursor over the readable part of a chain. `read*` moves it, `peek*` does not.
public struct ChainReader {
    private let chain: DescriptorChain
    private let memory: GuestMemory
    private var index = 0       // current descriptor
    private var offset = 0      // within it
    public private(set) var remaining: Int

    public init(chain: DescriptorChain, memory: GuestMemory) {
        self.chain = chain
        self.memory = memory
        self.remaining = chain.readableBytes
    }

    /// Reads exactly `buffer.count` bytes or throws without moving.
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(ChainError) {
        var copy = self
        try copy.consume(buffer.count, into: buffer.baseAddress)
        self = copy
    }

    public mutating func skip(_ count: Int) throws(ChainError) {
        var copy = self
        try copy.consume(count, into: nil)
        self = copy
    }

    /// `peekObject` and move past it, in one walk of the chain.
    public mutating func readObject<T: BitwiseCopyable>(_ type: T.Type) throws(ChainError) -> T {
        var copy = self
        let value = try copy.consumeObject(T.self)
        self = copy
        return value
    }

    public func peekObject<T: BitwiseCopyable>(_ type: T.Type) throws(ChainError) -> T {
        var copy = self
        return try copy.consumeObject(T.self)
    }

    /// Reads a `T` and leaves the cursor after it (or, on a throw, wherever the walk stopped:
    /// callers use a copy).
    private mutating func consumeObject<T: BitwiseCopyable>(_ type: T.Type) throws(ChainError) -> T {
        // Stack scratch, no heap allocation per command. Safety: T is BitwiseCopyable and every
        // bit pattern of the plain C structs read here is a valid value.
        return try withUnsafeTemporaryAllocation(byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment) {
            (scratch: UnsafeMutableRawBufferPointer) throws(ChainError) -> T in
            try self.consume(MemoryLayout<T>.size, into: scratch.baseAddress!)
            return scratch.load(as: T.self)
        }
    }

    private mutating func consume(_ count: Int, into destination: UnsafeMutableRawPointer?) throws(ChainError) {
        guard count >= 0, count <= remaining else { throw .shortRead(wanted: count, available: remaining) }
        var done = 0
        while done < count {
            let d = chain.descriptors[index]
            let n = min(count - done, Int(d.length) - offset)
            if n > 0, let destination {
                guard let src = d.address.checkedAdd(UInt64(offset)) else { throw .memory(.overflow(address: d.address.raw, length: offset)) }
                do { try memory.read(into: UnsafeMutableRawBufferPointer(start: destination + done, count: n), from: src) }
                catch { throw .memory(error) }
            }
            done += n
            offset += n
            if offset == Int(d.length) { index += 1; offset = 0 }
        }
        remaining -= count
    }
}

/// A cursor over the writable part of a chain.
public struct ChainWriter {
    private let chain: DescriptorChain
    private let memory: GuestMemory
    private var index: Int
    private var offset = 0
    public private(set) var bytesWritten = 0
    public var available: Int { chain.writableBytes - bytesWritten }

    public init(chain: DescriptorChain, memory: GuestMemory) {
        self.chain = chain
        self.memory = memory
        self.index = chain.descriptors.firstIndex { $0.isWritable } ?? chain.descriptors.count
    }

    /// Writes all of `bytes` or throws without writing anything (and without moving).
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(ChainError) {
        guard bytes.count <= available else { throw .shortWrite(wanted: bytes.count, available: available) }
        let memory = self.memory
        // Pass 1 checks every piece, pass 2 copies; both on copies of the cursor, so a failure
        // leaves neither guest memory nor the cursor half-moved.
        var probe = self
        try probe.forEachPiece(bytes.count) { (dst, _, n) throws(ChainError) in
            do throws(GuestMemoryError) { try memory.validate(dst, length: n) } catch { throw .memory(error) }
        }
        var cursor = self
        try cursor.forEachPiece(bytes.count) { (dst, done, n) throws(ChainError) in
            do throws(GuestMemoryError) { try memory.write(UnsafeRawBufferPointer(rebasing: bytes[done..<(done + n)]), to: dst) }
            catch { throw .memory(error) }
        }
        cursor.bytesWritten += bytes.count
        self = cursor
    }

    /// Walks `count` writable bytes from the cursor, calling `body(guest address, bytes done, piece length)`.
    private mutating func forEachPiece(_ count: Int,
                                       _ body: (GuestPhysicalAddress, Int, Int) throws(ChainError) -> Void) throws(ChainError) {
        var done = 0
        while done < count {
            let d = chain.descriptors[index]
            let n = min(count - done, Int(d.length) - offset)
            if n > 0 {
                guard let dst = d.address.checkedAdd(UInt64(offset)) else { throw .memory(.overflow(address: d.address.raw, length: offset)) }
                try body(dst, done, n)
            }
            done += n
            offset += n
            if offset == Int(d.length) { index += 1; offset = 0 }
        }
    }

    public mutating func writeObject<T: BitwiseCopyable>(_ value: T) throws(ChainError) {
        var v = value
        // withUnsafeBytes cannot forward a typed throw here; capture the error instead.
        var failure: ChainError?
        withUnsafeBytes(of: &v) { raw in
            do throws(ChainError) { try write(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}

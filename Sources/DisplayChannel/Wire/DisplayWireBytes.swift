// Byte access for the display socket's packed structs, written once: a reader that decodes
// fields from received bytes, a writer that stores fields into caller-provided memory, and the
// two protocols every wire struct implements (one `read`, one `write` each). Everything else
// (`encoded()`, `store(to:)`, `init(decoding:)`, size checks) is derived here, so a payload's
// layout is spelled exactly once.
//
// Why Swift structs with explicit field reads/writes rather than packed C structs in CShims
// (the same choice as the vhost-user payloads in VhostUser/Protocol): the layouts are tiny and
// fixed by the spec, a field-by-field list is as exact as a C declaration and pinned by the
// byte-level tests (DisplayProtocolTests, DisplayDMABufTests), the unaligned u64 of
// DMABUF_SCANOUT2 needs no packed-struct import, and C stays for what Swift cannot express.

/// Reads native-endian fields in order; callers check the total size first (the reader traps on
/// overrun, which is an internal invariant, never input-dependent).
public struct DisplayByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    public init(_ bytes: [UInt8], offset: Int = 0) { self.bytes = bytes; self.offset = offset }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) -> T {
        let size = MemoryLayout<T>.size
        precondition(offset + size <= bytes.count)
        // Safety: bounds checked above; an unaligned load of a trivial type.
        let v = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return v
    }
    public mutating func u32() -> UInt32 { load(UInt32.self) }
    public mutating func i32() -> Int32 { load(Int32.self) }
    public mutating func u64() -> UInt64 { load(UInt64.self) }
    public mutating func take(_ count: Int) -> [UInt8] {
        precondition(offset + count <= bytes.count)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
    public mutating func skip(_ count: Int) { precondition(offset + count <= bytes.count); offset += count }
}

/// Stores native-endian fields in order at `base` (unaligned stores are allowed), never past
/// `capacity` bytes (a struct whose variable part has the wrong length traps instead of writing
/// out of bounds). The memory is a scratch buffer on the send path (no allocation), or a fresh
/// array in `encoded()`.
public struct DisplayFieldWriter {
    public let base: UnsafeMutableRawPointer
    public let capacity: Int
    public private(set) var offset = 0
    public init(_ base: UnsafeMutableRawPointer, capacity: Int) { self.base = base; self.capacity = capacity }

    private mutating func advance(_ count: Int) -> UnsafeMutableRawPointer {
        precondition(count >= 0 && offset + count <= capacity, "wire struct larger than its byteCount")
        defer { offset += count }
        return base + offset
    }
    public mutating func u32(_ v: UInt32) { advance(4).storeBytes(of: v, as: UInt32.self) }
    public mutating func i32(_ v: Int32) { advance(4).storeBytes(of: v, as: Int32.self) }
    public mutating func u64(_ v: UInt64) { advance(8).storeBytes(of: v, as: UInt64.self) }
    public mutating func raw(_ b: [UInt8]) {
        let dst = advance(b.count)
        b.withUnsafeBytes { if let src = $0.baseAddress { dst.copyMemory(from: src, byteCount: $0.count) } }
    }
    public mutating func zeros(_ count: Int) { advance(count).initializeMemory(as: UInt8.self, repeating: 0, count: count) }
}

/// Something with a fixed size on the display socket that this side writes.
public protocol DisplayWireEncodable: Sendable {
    /// Its size on the wire (the packed C struct's size).
    static var byteCount: Int { get }
    /// Its one encoder: writes exactly `byteCount` bytes.
    func write(_ w: inout DisplayFieldWriter)
}

extension DisplayWireEncodable {
    /// Writes the `byteCount` bytes at `p` (no allocation).
    public func store(to p: UnsafeMutableRawPointer) {
        var w = DisplayFieldWriter(p, capacity: Self.byteCount)
        write(&w)
        precondition(w.offset == Self.byteCount, "wire struct smaller than its byteCount")
    }

    /// The bytes, in a new array.
    public func encoded() -> [UInt8] {
        guard Self.byteCount > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: Self.byteCount) { buffer, count in
            store(to: buffer.baseAddress!)
            count = Self.byteCount
        }
    }

    /// Appends the bytes to `writer`.
    public func encode(into writer: inout DisplayByteWriter) { writer.append(self) }
}

/// A fixed-size payload struct: one encoder (`write`), one decoder (`init(reading:)`).
public protocol DisplayPayload: DisplayWireEncodable, Equatable {
    /// A name for errors and logs (the spec's struct name).
    static var specName: String { get }
    /// Its one decoder: reads exactly `byteCount` bytes (the caller checked they are there).
    init(reading r: inout DisplayByteReader)
}

extension DisplayPayload {
    /// Decodes exactly `byteCount` bytes; any other count is `wrongSize`.
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = DisplayByteReader(bytes)
        self.init(reading: &r)
    }

    static func checkSize(_ bytes: [UInt8]) throws(DisplayProtocolError) {
        guard bytes.count == byteCount else {
            throw .wrongSize(what: specName, expected: byteCount, actual: bytes.count)
        }
    }
}

/// Builds a byte array from wire structs and raw bytes (tests, benchmarks, whole messages).
public struct DisplayByteWriter: Sendable {
    public private(set) var bytes: [UInt8]
    public init(capacity: Int = 0) { bytes = []; bytes.reserveCapacity(capacity) }
    public mutating func append(_ value: some DisplayWireEncodable) { bytes += value.encoded() }
    public mutating func raw(_ b: some Sequence<UInt8>) { bytes.append(contentsOf: b) }
}

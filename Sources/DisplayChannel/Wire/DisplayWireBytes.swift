import SystemSupport

// The two protocols every display-socket wire struct implements (one `read`, one `write` each). Everything else
// (`encoded()`, `store(to:)`, `init(decoding:)`, size checks) is derived here, so a payload's
// layout is spelled exactly once.
//
// Why Swift structs with explicit field reads/writes rather than packed C structs in CShims
// (the same choice as the vhost-user payloads in VhostUser/Protocol): the layouts are tiny and
// fixed by the spec, a field-by-field list is as exact as a C declaration and pinned by the
// byte-level tests (DisplayProtocolTests, DisplayDMABufTests), the unaligned u64 of
// DMABUF_SCANOUT2 needs no packed-struct import, and C stays for what Swift cannot express.

/// Something with a fixed size on the display socket that this side writes.
public protocol DisplayWireEncodable: Sendable {
    /// Its size on the wire (the packed C struct's size).
    static var byteCount: Int { get }
    /// Its one encoder: writes exactly `byteCount` bytes.
    func write(_ w: inout FieldWriter)
}

extension DisplayWireEncodable {
    /// Writes the `byteCount` bytes at `p` (no allocation).
    public func store(to p: UnsafeMutableRawPointer) {
        var w = FieldWriter(p, capacity: Self.byteCount)
        write(&w)
        precondition(w.offset == Self.byteCount, "wire struct smaller than its byteCount")
    }

    /// The bytes, in a new array.
    public func encoded() -> [UInt8] {
        FieldWriter.bytes(size: Self.byteCount) { write(&$0) }
    }

    /// Appends the bytes to `writer`.
    public func encode(into writer: inout DisplayByteWriter) { writer.append(self) }
}

/// A fixed-size payload struct: one encoder (`write`), one decoder (`init(reading:)`).
public protocol DisplayPayload: DisplayWireEncodable, Equatable {
    /// A name for errors and logs (the spec's struct name).
    static var specName: String { get }
    /// Its one decoder: reads exactly `byteCount` bytes (the caller checked they are there).
    init(reading r: inout ByteReader)
}

extension DisplayPayload {
    /// Decodes exactly `byteCount` bytes; any other count is `wrongSize`.
    public init(decoding bytes: [UInt8]) throws(DisplayProtocolError) {
        try Self.checkSize(bytes)
        var r = ByteReader(bytes)
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

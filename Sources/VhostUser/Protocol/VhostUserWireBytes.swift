// Byte access for vhost-user payloads, written once: a reader that decodes little-endian fields
// in order, a writer that appends them, and the protocol every fixed-size payload implements
// (one `init(reading:)`, one `write`), from which `init?(decoding:)` and `bytes` are derived.
//
// Why Swift structs with explicit little-endian fields rather than packed C structs in CShims:
// the vhost-user layouts are small, naturally aligned and fixed by the spec; a field list read
// and written in order is as exact as a C declaration, is pinned by WireTests, says the byte
// order out loud (the spec's is little-endian), and keeps C for what Swift cannot express. The
// display socket's structs (DisplayChannel/Wire) are done the same way.

/// A fixed-size vhost-user payload: one decoder, one encoder.
public protocol VhostUserPayload: Equatable, Sendable {
    /// Its size on the wire.
    static var size: Int { get }
    /// Its one decoder: reads exactly `size` bytes (the caller checked they are there).
    init(reading r: inout WireReader)
    /// Its one encoder: appends exactly `size` bytes.
    func write(_ w: WireWriter)
}

extension VhostUserPayload {
    /// Decodes exactly `size` bytes; nil for any other count.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count == Self.size else { return nil }
        var r = WireReader(bytes)
        self.init(reading: &r)
    }

    /// The payload's bytes.
    public var bytes: [UInt8] {
        let w = WireWriter()
        write(w)
        return w.bytes
    }
}

/// Little-endian reads, in order, from a received payload. Callers check the size first; an
/// overrun traps (an internal invariant, never input-dependent).
public struct WireReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    public init(_ bytes: [UInt8], offset: Int = 0) { self.bytes = bytes; self.offset = offset }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) -> T {
        let size = MemoryLayout<T>.size
        precondition(offset + size <= bytes.count)
        let v = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return T(littleEndian: v)
    }
    public mutating func u32() -> UInt32 { load(UInt32.self) }
    public mutating func u64() -> UInt64 { load(UInt64.self) }
    /// The next `count` bytes.
    public mutating func take(_ count: Int) -> [UInt8] {
        precondition(offset + count <= bytes.count)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
    /// Everything not read yet.
    public mutating func rest() -> [UInt8] { take(bytes.count - offset) }
}

/// Little-endian message building (control path only; not used per frame).
public final class WireWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    @discardableResult public func u32(_ v: UInt32) -> WireWriter { withUnsafeBytes(of: v.littleEndian) { bytes += $0 }; return self }
    @discardableResult public func u64(_ v: UInt64) -> WireWriter { withUnsafeBytes(of: v.littleEndian) { bytes += $0 }; return self }
    @discardableResult public func raw(_ v: [UInt8]) -> WireWriter { bytes += v; return self }
}

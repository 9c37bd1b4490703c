// Fixed-layout byte access, written once for every wire format of the project (vhost-user
// payloads, the display socket's structs): a reader that decodes fields in order, a writer that
// stores them into caller-provided memory (no allocation on the send path), and an appending
// builder for messages made once per request.
//
// Byte order: little-endian. vhost-user says so; the vhost-user-gpu display socket carries QEMU's
// structs in host order, which is little-endian on every host this builds for (x86_64, aarch64),
// so one rule serves both and is said out loud here.

/// Reads little-endian fields in order. Callers check the total size first; an overrun traps
/// (an internal invariant, never input-dependent).
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    public init(_ bytes: [UInt8], offset: Int = 0) { self.bytes = bytes; self.offset = offset }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) -> T {
        let size = MemoryLayout<T>.size
        precondition(offset + size <= bytes.count)
        // Safety: bounds checked above; an unaligned load of a trivial type.
        let v = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += size
        return T(littleEndian: v)
    }
    public mutating func u32() -> UInt32 { load(UInt32.self) }
    public mutating func i32() -> Int32 { load(Int32.self) }
    public mutating func u64() -> UInt64 { load(UInt64.self) }
    /// The next `count` bytes.
    public mutating func take(_ count: Int) -> [UInt8] {
        precondition(offset + count <= bytes.count)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
    public mutating func skip(_ count: Int) { precondition(offset + count <= bytes.count); offset += count }
    /// Everything not read yet.
    public mutating func rest() -> [UInt8] { take(bytes.count - offset) }
}

/// Stores little-endian fields in order at `base` (unaligned stores are allowed), never past
/// `capacity` bytes (a struct whose variable part has the wrong length traps instead of writing
/// out of bounds). The memory is a scratch buffer on a send path, or a fresh array.
public struct FieldWriter {
    public let base: UnsafeMutableRawPointer
    public let capacity: Int
    public private(set) var offset = 0
    public init(_ base: UnsafeMutableRawPointer, capacity: Int) { self.base = base; self.capacity = capacity }

    private mutating func advance(_ count: Int) -> UnsafeMutableRawPointer {
        precondition(count >= 0 && offset + count <= capacity, "wire struct larger than its size")
        defer { offset += count }
        return base + offset
    }
    public mutating func u32(_ v: UInt32) { advance(4).storeBytes(of: v.littleEndian, as: UInt32.self) }
    public mutating func i32(_ v: Int32) { advance(4).storeBytes(of: v.littleEndian, as: Int32.self) }
    public mutating func u64(_ v: UInt64) { advance(8).storeBytes(of: v.littleEndian, as: UInt64.self) }
    public mutating func raw(_ b: [UInt8]) {
        let dst = advance(b.count)
        b.withUnsafeBytes { if let src = $0.baseAddress { dst.copyMemory(from: src, byteCount: $0.count) } }
    }
    public mutating func zeros(_ count: Int) { advance(count).initializeMemory(as: UInt8.self, repeating: 0, count: count) }

    /// A new array of exactly `size` bytes filled by `fill` (which must write all of them).
    public static func bytes(size: Int, _ fill: (inout FieldWriter) -> Void) -> [UInt8] {
        guard size > 0 else { return [] }
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            var w = FieldWriter(buffer.baseAddress!, capacity: size)
            fill(&w)
            precondition(w.offset == size, "wire struct smaller than its size")
            count = size
        }
    }
}

/// Appends little-endian fields to a growing array (messages built once per request; not a
/// per-frame path).
public final class ByteWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    @discardableResult public func u32(_ v: UInt32) -> ByteWriter { withUnsafeBytes(of: v.littleEndian) { bytes += $0 }; return self }
    @discardableResult public func u64(_ v: UInt64) -> ByteWriter { withUnsafeBytes(of: v.littleEndian) { bytes += $0 }; return self }
    @discardableResult public func raw(_ v: [UInt8]) -> ByteWriter { bytes += v; return self }
}

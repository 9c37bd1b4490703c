/// A 16-byte RFC 4122 version 4 UUID naming an exported resource (RESOURCE_ASSIGN_UUID, virtio 1.2
/// section 5.7.6.8 and "exporting objects", section 3.4 of the spec).
///
/// Made by this backend from `SystemRandomNumberGenerator`, unique across every device the process
/// serves (see `ResourceUUIDRegistry`). This is the only name another device or process may use to
/// look a resource up: never a guest address, never a resource id of some other device.
///
/// The one UUID type of the project. It lives in VirtioCore (which needs only CShims) because a
/// virtio object UUID is a virtio-level name, not a GPU one: the GPU device makes them, while the
/// control socket's clients (VGPUResolve, the importer device, vgpuctl, vgpu-bench) parse and
/// compare them without linking the GPU device or virglrenderer.
public struct ResourceUUID: Hashable, Sendable, CustomStringConvertible {
    /// Bytes 0...7 and 8...15, most significant byte first (the wire order of `uuid[16]`).
    public let high: UInt64
    public let low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// From 16 bytes in wire order; nil if `bytes` does not hold exactly 16.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
        }
        self.init(high: h, low: l)
    }

    /// From the 16 bytes at `pointer` (a wire struct's `uuid[16]`).
    public init(pointer: UnsafeRawPointer) {
        self.init(bytes: UnsafeRawBufferPointer(start: pointer, count: 16))!
    }

    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    public init?(string: String) {
        let utf8 = Array(string.utf8)
        guard utf8.count == 36 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var i = 0
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard utf8[i] == UInt8(ascii: "-") else { return nil }
                i += 1
                continue
            }
            guard i + 1 < 36, let hi = Self.hexValue(utf8[i]), let lo = Self.hexValue(utf8[i + 1]) else { return nil }
            bytes.append(hi << 4 | lo)
            i += 2
        }
        self.init(bytes: bytes)
    }

    /// A fresh version 4 (random) UUID.
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> ResourceUUID {
        var h = generator.next() as UInt64
        var l = generator.next() as UInt64
        h = (h & ~0x0000_0000_0000_F000) | 0x0000_0000_0000_4000   // version 4: byte 6 high nibble
        l = (l & ~0xC000_0000_0000_0000) | 0x8000_0000_0000_0000   // variant 10xx: byte 8
        return ResourceUUID(high: h, low: l)
    }

    /// A fresh version 4 UUID from the system's cryptographic generator.
    public static func random() -> ResourceUUID {
        var g = SystemRandomNumberGenerator()
        return random(using: &g)
    }

    /// The 16 bytes in wire order.
    public var bytes: [UInt8] {
        (0..<16).map { i in i < 8 ? UInt8(truncatingIfNeeded: high >> (56 - 8 * i)) : UInt8(truncatingIfNeeded: low >> (56 - 8 * (i - 8))) }
    }

    /// Writes the 16 wire-order bytes to `destination`.
    public func write(to destination: UnsafeMutableRawPointer) {
        // Safety: the caller provides 16 writable bytes; storeBytes(toByteOffset:) is unaligned-safe for UInt64.
        destination.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
        destination.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// The version nibble (4 for the UUIDs this backend makes).
    public var version: Int { Int((high >> 12) & 0xF) }
    /// True for the RFC 4122 variant (bits 10xx in byte 8).
    public var isRFC4122Variant: Bool { (low >> 62) == 0b10 }

    public var description: String {
        let hex = bytes.map { b -> String in
            let s = String(b, radix: 16)
            return b < 16 ? "0" + s : s
        }
        return hex[0..<4].joined() + "-" + hex[4..<6].joined() + "-" + hex[6..<8].joined() + "-"
            + hex[8..<10].joined() + "-" + hex[10..<16].joined()
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A buffer's UUID (virtio "exporting objects": RESOURCE_ASSIGN_UUID), 16 bytes in wire order.
/// Text form: lower-case `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (what the control socket speaks).
/// Kept apart from VirtioGPU's `ResourceUUID` so that importers need not link the GPU device.
public struct BufferUUID: Hashable, Sendable, CustomStringConvertible {
    /// Bytes 0-7 and 8-15, big-endian, so comparing and hashing need no array.
    public let high: UInt64
    public let low: UInt64

    /// From 16 bytes; nil for any other count.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for (i, b) in bytes.enumerated() {
            if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
        }
        high = h
        low = l
    }

    /// From 16 bytes at `pointer` (a wire struct's `uuid`).
    public init(pointer: UnsafeRawPointer) {
        self.init(bytes: UnsafeRawBufferPointer(start: pointer, count: 16))!
    }

    /// From the text form (either case); nil if malformed.
    public init?(string: String) {
        let utf8 = Array(string.utf8)
        guard utf8.count == 36 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(16)
        var i = 0
        while i < 36 {
            if i == 8 || i == 13 || i == 18 || i == 23 {
                guard utf8[i] == UInt8(ascii: "-") else { return nil }
                i += 1
                continue
            }
            guard let hi = Self.hex(utf8[i]), let lo = Self.hex(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        self.init(bytes: out)
    }

    /// The 16 bytes in wire order.
    public var bytes: [UInt8] {
        (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? high >> (8 * (7 - UInt64(i))) : low >> (8 * (15 - UInt64(i))))) }
    }

    public var description: String {
        let hex = bytes.map { b in String(b >> 4, radix: 16) + String(b & 0xF, radix: 16) }.joined()
        let c = Array(hex)
        return String(c[0..<8]) + "-" + String(c[8..<12]) + "-" + String(c[12..<16]) + "-" + String(c[16..<20]) + "-" + String(c[20..<32])
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Writes protocol lines as JSON without Foundation's JSONEncoder: replies are most of what a
/// control request costs (JSONEncoder's boxing was 27 % of a request in the fuzz profile), and
/// `watch` streams and importers resolving per frame send many. The output is byte for byte what
/// `JSONEncoder` with `[.sortedKeys, .withoutEscapingSlashes]` writes for the same value (keys in
/// sorted order, absent optionals left out, whole doubles without ".0"); `ControlUnitTests`
/// checks that against JSONEncoder for every type here.
public struct ControlJSONWriter {
    public private(set) var bytes: [UInt8] = []
    private var needsComma = false

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    // MARK: Structure

    mutating func object(_ body: (inout ControlJSONWriter) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
        body(&self)
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    mutating func array<S: Sequence>(_ elements: S, _ element: (inout ControlJSONWriter, S.Element) -> Void) {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        for e in elements { element(&self, e) }
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    /// A key; the value written next belongs to it. Keys are ASCII literals without escapes.
    mutating func key(_ name: StaticString) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = true
    }

    // MARK: Values

    mutating func value(_ v: Bool) {
        separate()
        bytes.append(contentsOf: v ? Self.trueBytes : Self.falseBytes)
    }

    mutating func value(_ v: some BinaryInteger) {
        separate()
        if v < 0 { bytes.append(UInt8(ascii: "-")) }
        // Digits into a fixed buffer, most significant first: no String per number.
        var magnitude = v.magnitude
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 40) { digits in
            var n = 0
            repeat {
                digits[n] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
                n += 1
            } while magnitude != 0
            for i in stride(from: n - 1, through: 0, by: -1) { bytes.append(digits[i]) }
        }
    }

    /// As JSONEncoder writes a double: its shortest description, a trailing ".0" dropped.
    /// JSON has no infinity or NaN (JSONEncoder refuses them); the protocol's doubles are times
    /// and ages, always finite, and a non-finite one is written as 0.
    mutating func value(_ v: Double) {
        guard v.isFinite else { return value(0) }
        separate()
        var text = v.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        bytes.append(contentsOf: text.utf8)
    }

    /// A string, escaped as JSONEncoder does: quote, backslash and control characters; '/' and
    /// everything non-ASCII as they are.
    mutating func value(_ s: String) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(b)
            case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0x08: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "b"))
            case 0x0C: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "f"))
            case 0..<0x20:
                bytes.append(contentsOf: Self.unicodeEscape)
                bytes.append(Self.hex[Int(b >> 4)])
                bytes.append(Self.hex[Int(b & 0xF)])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// A key and its value, or nothing when the value is absent (JSONEncoder's encodeIfPresent).
    mutating func field(_ name: StaticString, _ v: String?) { if let v { key(name); value(v) } }
    mutating func field(_ name: StaticString, _ v: Bool?) { if let v { key(name); value(v) } }
    mutating func field(_ name: StaticString, _ v: Double?) { if let v { key(name); value(v) } }
    mutating func field<I: BinaryInteger>(_ name: StaticString, _ v: I?) { if let v { key(name); value(v) } }
    mutating func field<T: ControlJSONWritable>(_ name: StaticString, _ v: T?) { if let v { key(name); v.write(to: &self) } }
    mutating func field<T: ControlJSONWritable>(_ name: StaticString, _ v: [T]?) {
        if let v { key(name); array(v) { w, e in e.write(to: &w) } }
    }
    mutating func field<I: BinaryInteger>(_ name: StaticString, _ v: [I]) { key(name); array(v) { w, e in w.value(e) } }

    private static let trueBytes = Array("true".utf8)
    private static let falseBytes = Array("false".utf8)
    private static let unicodeEscape = Array("\\u00".utf8)
    private static let hex = Array("0123456789abcdef".utf8)
}

/// A protocol type ControlJSONWriter writes by hand. Each writes its keys in sorted order.
public protocol ControlJSONWritable: Encodable {
    func write(to w: inout ControlJSONWriter)
}

extension ControlRequest: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("holder", holder); w.field("id", id); w.field("method", method); w.field("resource", resource); w.field("version", version)
        }
    }
}

extension ControlResponse: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("error", error); w.field("event", event); w.field("id", id); w.field("ok", ok); w.field("result", result)
            w.field("version", version)
        }
    }
}

extension ControlError: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in w.field("code", code.rawValue); w.field("message", message) }
    }
}

extension EventRecord: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("device", device); w.field("dropped", dropped); w.field("kind", kind); w.field("resource", resource)
            w.field("time", time); w.field("uuid", uuid)
        }
    }
}

extension ControlResult: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("buffer", buffer); w.field("detail", detail); w.field("devices", devices); w.field("released", released)
            w.field("watching", watching)
        }
    }
}

extension BufferLayout: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("coherency", coherency); w.field("device", device); w.field("drmFormat", drmFormat); w.field("foreign", foreign)
            w.field("format", format); w.field("fourcc", fourcc); w.field("handleType", handleType); w.field("height", height)
            w.field("kind", kind); w.field("modifier", modifier); w.field("offset", offset); w.field("resource", resource)
            w.field("size", size); w.field("stride", stride); w.field("uuid", uuid); w.field("width", width)
        }
    }
}

extension ResourceDetail: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("createdAt", createdAt); w.field("deviceLabel", deviceLabel); w.field("guestBacking", guestBacking)
            w.field("resource", resource)
        }
    }
}

extension GuestRange: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in w.field("guestPhysicalAddress", guestPhysicalAddress); w.field("length", length) }
    }
}

extension DeviceSummary: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("connectedSeconds", connectedSeconds); w.field("id", id); w.field("label", label); w.field("resources", resources)
        }
    }
}

extension ResourceSummary: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("ageSeconds", ageSeconds); w.field("backingBytes", backingBytes); w.field("backingEntries", backingEntries)
            w.field("device", device); w.field("format", format); w.field("fourcc", fourcc); w.field("height", height)
            w.field("holders", holders); w.field("hostBuffer", hostBuffer); w.field("id", id); w.field("scanouts", scanouts)
            w.field("stride", stride); w.field("uuid", uuid); w.field("width", width)
        }
    }
}

extension HostBufferSummary: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in
            w.field("coherency", coherency); w.field("exported", exported); w.field("kind", kind); w.field("shadowReason", shadowReason)
            w.field("size", size); w.field("source", source)
        }
    }
}

extension ResourceHolder: ControlJSONWritable {
    public func write(to w: inout ControlJSONWriter) {
        w.object { w in w.field("count", count); w.field("holder", holder); w.field("pid", pid) }
    }
}

import Foundation

/// Encoding and decoding of protocol lines.
public enum ControlCodec {
    /// One encoder for every line (JSONEncoder is Sendable; each encode keeps its own state).
    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// A protocol line, written by ControlJSONWriter (the same bytes JSONEncoder gives, faster).
    public static func encodeLine(_ value: some ControlJSONWritable) -> [UInt8] {
        var w = ControlJSONWriter()
        value.write(to: &w)
        var bytes = w.bytes
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    /// Any other Encodable, through JSONEncoder with the protocol's formatting.
    public static func encodeLine<T: Encodable>(_ value: T) -> [UInt8] {
        // Encoding these plain structs cannot fail.
        var bytes = [UInt8]((try? encoder.encode(value)) ?? Data(#"{"version":1,"ok":false}"#.utf8))
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    /// Decodes a request line (newline excluded), checking the version and method.
    public enum Decoded: Equatable, Sendable {
        case request(ControlRequest, ControlMethod)
        /// The line is not a valid request: send this error reply.
        case rejected(ControlResponse)
    }

    public static func decodeRequest(_ line: some Collection<UInt8>) -> Decoded {
        // One parse, field by field, so a request missing a field or with a mistyped one is
        // still answered with its id (a second, loose parse for the id doubled the decoding
        // of every request).
        // JSON allows no raw control characters (RFC 8259). JSONDecoder checks a string's
        // characters only when that value is decoded (measured: {"id":8,"x":"a<NUL>b"} decodes
        // as a struct with just `id`), so a line holding one is refused here, whole.
        let hasRawControl = line.withContiguousStorageIfAvailable { $0.contains(where: isRawControl) } ?? line.contains(where: isRawControl)
        guard !hasRawControl, let fields = try? JSONDecoder().decode(RequestFields.self, from: Data(line)) else {
            return .rejected(.failure(nil, ControlError(.badRequest, "request is not a JSON object")))
        }
        guard fields.wellFormed, let version = fields.version, let id = fields.id, let methodName = fields.method else {
            return .rejected(.failure(fields.id, ControlError(.badRequest, "request needs integer \"version\", integer \"id\" and string \"method\"")))
        }
        guard version == ControlProtocol.version else {
            return .rejected(.failure(id, ControlError(.unsupportedVersion, "protocol version \(version) not supported (this server speaks \(ControlProtocol.version))")))
        }
        guard let method = ControlMethod(rawValue: methodName) else {
            return .rejected(.failure(id, ControlError(.unknownMethod, "unknown method \"\(methodName)\" (methods: \(ControlMethod.allCases.map(\.rawValue).joined(separator: ", ")))")))
        }
        return .request(ControlRequest(id: id, method: method, resource: fields.resource, holder: fields.holder), method)
    }

    /// A byte JSON allows only escaped: below 0x20, whitespace apart.
    private static func isRawControl(_ b: UInt8) -> Bool { b < 0x20 && b != 0x09 && b != 0x0a && b != 0x0d }

    public static func decodeResponse(_ line: some Collection<UInt8>) throws -> ControlResponse {
        try JSONDecoder().decode(ControlResponse.self, from: Data(line))
    }
}

/// A request line's fields, each decoded on its own: a missing or mistyped field does not lose
/// the others (the id the error names). `wellFormed` is false when a field is present with the
/// wrong type (`"resource": 5`) or a required one is absent or null.
private struct RequestFields: Decodable {
    var version: Int?
    var id: Int?
    var method: String?
    var resource: String?
    var holder: String?
    var wellFormed = true

    private enum CodingKeys: String, CodingKey { case version, id, method, resource, holder }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)   // throws unless an object
        var wellFormed = true
        func field<T: Decodable>(_ type: T.Type, _ key: CodingKeys) -> T? {
            do { return try c.decodeIfPresent(type, forKey: key) } catch { wellFormed = false; return nil }
        }
        version = field(Int.self, .version)
        id = field(Int.self, .id)
        method = field(String.self, .method)
        resource = field(String.self, .resource)
        holder = field(String.self, .holder)
        self.wellFormed = wellFormed
    }
}

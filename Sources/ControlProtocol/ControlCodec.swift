import Foundation

/// Encoding and decoding of protocol lines.
public enum ControlCodec {
    public static func encodeLine<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
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
        let data = Data(line)
        let request: ControlRequest
        do { request = try JSONDecoder().decode(ControlRequest.self, from: data) } catch {
            // Only a request that does not decode is parsed a second time, loosely, so the
            // error can name its id (a well-formed request is parsed once: parsing is most of
            // a request's cost).
            let loose = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
            guard let loose else {
                return .rejected(.failure(nil, ControlError(.badRequest, "request is not a JSON object")))
            }
            return .rejected(.failure(loose["id"] as? Int, ControlError(.badRequest, "request needs integer \"version\", integer \"id\" and string \"method\"")))
        }
        guard request.version == ControlProtocol.version else {
            return .rejected(.failure(request.id, ControlError(.unsupportedVersion, "protocol version \(request.version) not supported (this server speaks \(ControlProtocol.version))")))
        }
        guard let method = ControlMethod(rawValue: request.method) else {
            return .rejected(.failure(request.id, ControlError(.unknownMethod, "unknown method \"\(request.method)\" (methods: \(ControlMethod.allCases.map(\.rawValue).joined(separator: ", ")))")))
        }
        return .request(request, method)
    }

    public static func decodeResponse(_ line: some Collection<UInt8>) throws -> ControlResponse {
        try JSONDecoder().decode(ControlResponse.self, from: Data(line))
    }
}

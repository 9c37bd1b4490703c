// Whole display messages: a header and its payload, as a value, and the one place that turns a
// request or a reply into bytes (for tests, the peer and the benchmark; the sink builds the same
// bytes in scratch memory from the same structs, see Transport/DisplaySendBuffer.swift).

/// One whole message: header and payload.
public struct DisplayMessage: Sendable, Equatable {
    public var header: DisplayMessageHeader
    /// The payload. For an UPDATE read by a decoder that discards pixels, only the 20-byte
    /// `VhostUserGpuUpdate` header; `discardedPayloadBytes` counts the rest.
    public var payload: [UInt8]
    public var discardedPayloadBytes: Int

    public init(header: DisplayMessageHeader, payload: [UInt8], discardedPayloadBytes: Int = 0) {
        self.header = header; self.payload = payload; self.discardedPayloadBytes = discardedPayloadBytes
    }

    public var request: DisplayRequest? { header.knownRequest }
    public var isReply: Bool { header.flags.contains(.reply) }

    /// Encodes a request: header (flags 0, size = payload count) + payload.
    public static func request(_ request: DisplayRequest, payload: [UInt8] = []) -> [UInt8] {
        encode(DisplayMessageHeader(request, size: UInt32(payload.count)), payload)
    }
    public static func request(_ request: DisplayRequest, _ payload: some DisplayPayload) -> [UInt8] {
        self.request(request, payload: payload.encoded())
    }
    /// Encodes a reply as QEMU does: same request code, flags = REPLY (0x4).
    public static func reply(_ request: DisplayRequest, payload: [UInt8] = []) -> [UInt8] {
        encode(DisplayMessageHeader(request, flags: .reply, size: UInt32(payload.count)), payload)
    }
    public static func reply(_ request: DisplayRequest, _ payload: some DisplayPayload) -> [UInt8] {
        reply(request, payload: payload.encoded())
    }
    /// Encodes an UPDATE with `pixels` (packed rows, exactly width*height*4 bytes).
    public static func update(_ header: DisplayUpdateHeader, pixels: [UInt8]) -> [UInt8] {
        precondition(UInt64(pixels.count) == UInt64(header.width) * UInt64(header.height) * 4)
        return request(.update, payload: header.encoded() + pixels)
    }

    static func encode(_ header: DisplayMessageHeader, _ payload: [UInt8]) -> [UInt8] {
        var w = DisplayByteWriter(capacity: DisplayMessageHeader.byteCount + payload.count)
        w.append(header)
        w.raw(payload)
        return w.bytes
    }
}

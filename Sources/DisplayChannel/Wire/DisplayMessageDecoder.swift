// The streaming decoder for the display socket: feed it any split of the byte stream, get each
// whole message once. Both ends use it (the sink for QEMU's replies, the peer for requests).

/// An incremental decoder for a byte stream of display messages: feed any split of the bytes,
/// get each whole message once. With `discardUpdatePixels`, UPDATE pixel bytes are counted and
/// dropped as they stream past (never stored), for benchmarks.
public struct DisplayMessageDecoder: Sendable {
    /// Payloads larger than this are a framing error (the size field is garbage).
    public var maxPayloadSize: Int
    public var discardUpdatePixels: Bool

    private var headerBytes: [UInt8] = []
    private var header: DisplayMessageHeader?
    private var payload: [UInt8] = []
    /// Payload bytes still to keep (copied into `payload`).
    private var keepRemaining = 0
    /// Payload bytes still to drop after the kept part.
    private var skipRemaining = 0
    private var skipped = 0

    public init(maxPayloadSize: Int = 256 << 20, discardUpdatePixels: Bool = false) {
        self.maxPayloadSize = maxPayloadSize
        self.discardUpdatePixels = discardUpdatePixels
        headerBytes.reserveCapacity(DisplayMessageHeader.byteCount)
    }

    /// True when no partial message is buffered.
    public var isAtMessageBoundary: Bool { header == nil && headerBytes.isEmpty }

    /// Consumes `bytes`, calling `onMessage` for every message completed. After a thrown error
    /// the stream is out of sync and the decoder must not be fed again.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer,
                              onMessage: (DisplayMessage) -> Void) throws(DisplayProtocolError) {
        var i = 0
        let n = bytes.count
        while true {
            if let h = header {
                if keepRemaining > 0 {
                    let take = min(keepRemaining, n - i)
                    payload.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + take]))
                    i += take; keepRemaining -= take
                    if keepRemaining > 0 { return }
                }
                if skipRemaining > 0 {
                    let take = min(skipRemaining, n - i)
                    i += take; skipRemaining -= take; skipped += take
                    if skipRemaining > 0 { return }
                }
                let message = DisplayMessage(header: h, payload: payload, discardedPayloadBytes: skipped)
                header = nil; payload = []; skipped = 0
                onMessage(message)
                continue
            }
            if i == n { return }
            let take = min(DisplayMessageHeader.byteCount - headerBytes.count, n - i)
            headerBytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + take]))
            i += take
            guard headerBytes.count == DisplayMessageHeader.byteCount else { return }
            let h = try DisplayMessageHeader(decoding: headerBytes)   // exactly 12 bytes: never throws
            headerBytes.removeAll(keepingCapacity: true)
            let size = Int(h.size)
            if discardUpdatePixels, h.request == DisplayRequest.update.rawValue, !h.flags.contains(.reply) {
                keepRemaining = min(size, DisplayUpdateHeader.byteCount)
                skipRemaining = size - keepRemaining
            } else {
                guard size <= maxPayloadSize else { throw .payloadTooLarge(size: h.size, limit: maxPayloadSize) }
                keepRemaining = size
                skipRemaining = 0
            }
            payload = []
            payload.reserveCapacity(keepRemaining)
            header = h
        }
    }
}

import SystemSupport

// The protocol every fixed-size vhost-user payload implements (one `init(reading:)`, one
// `write`), from which `init?(decoding:)` and `bytes` are derived. The byte reader and writer
// are SystemSupport's (ByteFields.swift), shared with the display socket's structs.
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
    init(reading r: inout ByteReader)
    /// Its one encoder: appends exactly `size` bytes.
    func write(_ w: ByteWriter)
}

extension VhostUserPayload {
    /// Decodes exactly `size` bytes; nil for any other count.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count == Self.size else { return nil }
        var r = ByteReader(bytes)
        self.init(reading: &r)
    }

    /// The payload's bytes.
    public var bytes: [UInt8] {
        let w = ByteWriter()
        write(w)
        return w.bytes
    }
}

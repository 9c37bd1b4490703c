// Reusable send memory for the display socket: an iovec array of IOV_MAX entries and a small
// scratch area where a message's header and fixed-size payload are stored before the send, so
// no message costs an allocation. Large data (UPDATE pixels, the cursor image) is not copied
// here: the caller points further iovecs at it.

#if canImport(Glibc)
import SystemSupport
import Glibc
#endif

/// No payload (GET_PROTOCOL_FEATURES, GET_DISPLAY_INFO).
struct DisplayNoPayload: DisplayWireEncodable {
    static let byteCount = 0
    func write(_ w: inout FieldWriter) {}
}

// @unchecked: the owner keeps it under a lock; the raw pointers are owned scratch memory.
struct DisplaySendBuffer: @unchecked Sendable {
    static let scratchSize = 128

    /// `iovMax` entries.
    let iov: UnsafeMutablePointer<iovec>
    /// Header and small payloads.
    let scratch: UnsafeMutableRawPointer

    init(iovMax: Int) {
        iov = UnsafeMutablePointer<iovec>.allocate(capacity: iovMax)
        iov.initialize(repeating: iovec(), count: iovMax)
        scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.scratchSize, alignment: 8)
    }

    func deallocate() {
        iov.deallocate()
        scratch.deallocate()
    }

    /// Stores the header of `request` and `head` in the scratch area and points `iov[0]` at
    /// them; returns 1, the number of iovecs used. `payloadSize`: the header's size field when
    /// the payload goes on beyond `head` (UPDATE pixels, the cursor image); by default `head`'s size.
    func stage<Head: DisplayWireEncodable>(_ request: DisplayRequest, _ head: Head, payloadSize: UInt32? = nil) -> Int {
        let length = DisplayMessageHeader.byteCount + Head.byteCount
        precondition(length <= Self.scratchSize)
        DisplayMessageHeader(request, size: payloadSize ?? UInt32(Head.byteCount)).store(to: scratch)
        head.store(to: scratch + DisplayMessageHeader.byteCount)
        iov[0] = iovec(iov_base: scratch, iov_len: length)
        return 1
    }
}

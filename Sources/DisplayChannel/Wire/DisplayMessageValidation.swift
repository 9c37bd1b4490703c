// Validation of whole display messages: the size and flag rules of each request code, and what
// makes a message a well-formed reply to a given request. Used by the tests' strict frontend
// checks; the sink's reply matcher applies the reply rule to what QEMU sends.

extension DisplayMessage {
    /// Checks a request (flags, size rules of its code) the way a strict frontend would.
    public func validateAsRequest() throws(DisplayProtocolError) {
        guard let req = request else { throw .unknownRequest(header.request) }
        guard !isReply else { throw .badFlags(request: header.request, flags: header.flags.rawValue) }
        let actual = Int(header.size)
        switch req.requestPayloadSize {
        case .exact(let n):
            guard actual == n else { throw .wrongSize(what: req.name, expected: n, actual: actual) }
        case .update:
            guard payload.count >= DisplayUpdateHeader.byteCount else {
                throw .wrongSize(what: req.name, expected: DisplayUpdateHeader.byteCount, actual: payload.count)
            }
            let u = try DisplayUpdateHeader(decoding: Array(payload[0..<DisplayUpdateHeader.byteCount]))
            guard let expected = u.updatePayloadSize, expected == header.size else {
                throw .badUpdateSize(width: u.width, height: u.height, size: header.size)
            }
        }
    }

    /// Checks a reply to `expected`: same code, reply flag, exact size.
    public func validateAsReply(to expected: DisplayRequest) throws(DisplayProtocolError) {
        guard let req = request else { throw .unknownRequest(header.request) }
        guard isReply else { throw .badFlags(request: header.request, flags: header.flags.rawValue) }
        let size = req.replyPayloadSize ?? -1
        guard req == expected, Int(header.size) == size else {
            throw .wrongSize(what: "\(req.name) reply", expected: expected.replyPayloadSize ?? 0, actual: Int(header.size))
        }
    }
}

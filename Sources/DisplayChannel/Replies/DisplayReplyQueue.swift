// Matching QEMU's answers on the display socket to the requests that are owed one. No I/O:
// the reader feeds each decoded message to `match`, waiters collect their result by token.
//
// QEMU answers in request order, with two exceptions: GET_EDID beyond its max_outputs gets no
// reply at all, and DMABUF_UPDATE is answered when the display has flushed, which may come
// after the replies to later requests if the console did not block.

struct DisplayReplyQueue {
    /// Who takes an owed reply.
    enum Role {
        /// The GET_PROTOCOL_FEATURES sent at start: the feature exchange.
        case negotiation
        /// A caller waiting by token.
        case waiter
        /// Nobody (a ping, or a waiter that gave up): read and dropped.
        case discard
    }

    struct Pending {
        var request: DisplayRequest
        var token: UInt64
        var role: Role
    }

    enum Result {
        case message(DisplayMessage)
        /// QEMU answered a later request first: it never answers this one (GET_EDID for a
        /// scanout id >= max_outputs).
        case dropped
    }

    /// What one message from QEMU meant.
    enum Match: Equatable {
        /// A waiter's result is ready.
        case delivered
        /// A late reply nobody waits for any more: read and dropped.
        case dropped(DisplayRequest)
        /// The GET_PROTOCOL_FEATURES reply of the feature exchange.
        case negotiation(DisplayMessage)
        /// Not a reply that is owed: the stream cannot be trusted any more.
        case broken(String)
    }

    /// Replies QEMU owes, oldest first (QEMU answers in request order).
    private var pending: [Pending] = []
    private var results: [UInt64: Result] = [:]
    private var nextToken: UInt64 = 1

    init() { pending.reserveCapacity(8) }

    /// True while the feature exchange's reply is still owed.
    var owesNegotiation: Bool { pending.contains { $0.role == .negotiation } }

    /// Records a reply owed to the feature exchange or to nobody.
    mutating func owe(_ request: DisplayRequest, role: Role) {
        pending.append(Pending(request: request, token: 0, role: role))
    }

    /// Records a reply a caller waits for; returns its token.
    mutating func oweWaiter(_ request: DisplayRequest) -> UInt64 {
        let token = nextToken
        nextToken += 1
        pending.append(Pending(request: request, token: token, role: .waiter))
        return token
    }

    func hasResult(_ token: UInt64) -> Bool { results[token] != nil }

    mutating func takeResult(_ token: UInt64) -> Result? { results.removeValue(forKey: token) }

    /// The waiter gave up: its reply, when it comes, is read and dropped.
    mutating func abandon(_ token: UInt64) {
        if let i = pending.firstIndex(where: { $0.token == token && $0.role == .waiter }) {
            pending[i].role = .discard
        }
    }

    /// Matches one message from QEMU against the replies it owes. `unansweredEDIDs`: how many
    /// GET_EDID the message proved QEMU will never answer (their waiters get `.dropped`).
    mutating func match(_ message: DisplayMessage) -> (match: Match, unansweredEDIDs: Int) {
        var unansweredEDIDs = 0
        guard message.isReply, let request = message.request, let size = request.replyPayloadSize,
              Int(message.header.size) == size else {
            return (.broken("malformed message from QEMU: request \(message.header.request), flags 0x\(String(message.header.flags.rawValue, radix: 16)), size \(message.header.size)"), 0)
        }
        var i = 0
        while i < pending.count {
            let entry = pending[i]
            if entry.request == request {
                pending.remove(at: i)
                switch entry.role {
                case .negotiation: return (.negotiation(message), unansweredEDIDs)
                case .waiter:
                    results[entry.token] = .message(message)
                    return (.delivered, unansweredEDIDs)
                case .discard: return (.dropped(request), unansweredEDIDs)
                }
            }
            switch entry.request {
            case .dmabufUpdate:
                i += 1 // still owed
            case .getEDID:
                // QEMU 10 answers nothing to GET_EDID for a scanout >= max_outputs.
                pending.remove(at: i)
                if entry.role == .waiter { results[entry.token] = .dropped }
                unansweredEDIDs += 1
            default:
                return (.broken("unexpected \(request.name) reply from QEMU (expected: \(entry.request.name))"), unansweredEDIDs)
            }
        }
        return (.broken("unexpected \(request.name) reply from QEMU (none owed)"), unansweredEDIDs)
    }
}

// The reply matcher on its own, without a socket: QEMU's ordering rules (in request order,
// except DMABUF_UPDATE answered late and GET_EDID beyond max_outputs never answered).

import Testing

@testable import DisplayChannel

@Suite("Display reply matching")
struct DisplayReplyQueueTests {
    private func reply(_ request: DisplayRequest, _ payload: [UInt8] = []) -> DisplayMessage {
        DisplayMessage(header: DisplayMessageHeader(request, flags: .reply, size: UInt32(payload.count)), payload: payload)
    }

    private let features = DisplayFeaturesPayload([.edid]).encoded()
    private let info = DisplayInfoReply(modes: []).encoded()

    @Test func repliesGoToTheirWaitersInOrder() {
        var q = DisplayReplyQueue()
        q.owe(.getProtocolFeatures, role: .negotiation)
        let token = q.oweWaiter(.getDisplayInfo)
        #expect(q.owesNegotiation)
        #expect(q.match(reply(.getProtocolFeatures, features)).match == .negotiation(reply(.getProtocolFeatures, features)))
        #expect(!q.owesNegotiation)
        #expect(!q.hasResult(token))
        #expect(q.match(reply(.getDisplayInfo, info)) == (.delivered, 0))
        guard case .message(let m)? = q.takeResult(token) else { Issue.record("no result"); return }
        #expect(m.payload == info)
        #expect(q.takeResult(token) == nil)
    }

    @Test func aDMABufUpdateReplyMayComeAfterLaterReplies() {
        var q = DisplayReplyQueue()
        let flush = q.oweWaiter(.dmabufUpdate)
        let display = q.oweWaiter(.getDisplayInfo)
        #expect(q.match(reply(.getDisplayInfo, info)) == (.delivered, 0))
        #expect(q.hasResult(display) && !q.hasResult(flush))
        #expect(q.match(reply(.dmabufUpdate)) == (.delivered, 0))
        #expect(q.hasResult(flush))
    }

    @Test func aLaterReplyProvesAnEDIDRequestUnanswered() {
        var q = DisplayReplyQueue()
        let edid = q.oweWaiter(.getEDID)
        q.owe(.getProtocolFeatures, role: .discard)
        #expect(q.match(reply(.getProtocolFeatures, features)) == (.dropped(.getProtocolFeatures), 1))
        guard case .dropped? = q.takeResult(edid) else { Issue.record("GET_EDID not marked unanswered"); return }
    }

    @Test func anAbandonedWaitersReplyIsDropped() {
        var q = DisplayReplyQueue()
        let token = q.oweWaiter(.getDisplayInfo)
        q.abandon(token)
        #expect(q.match(reply(.getDisplayInfo, info)) == (.dropped(.getDisplayInfo), 0))
        #expect(!q.hasResult(token))
    }

    @Test func unowedOrMalformedRepliesBreakTheStream() {
        var q = DisplayReplyQueue()
        guard case .broken = q.match(reply(.getDisplayInfo, info)).match else { Issue.record("none owed"); return }
        _ = q.oweWaiter(.getDisplayInfo)
        guard case .broken = q.match(reply(.getEDID, DisplayEDIDReply(blob: []).encoded())).match else {
            Issue.record("out of order"); return
        }
        var fresh = DisplayReplyQueue()
        _ = fresh.oweWaiter(.getDisplayInfo)
        // Wrong size, and a request (no reply flag) in place of a reply.
        guard case .broken = fresh.match(reply(.getDisplayInfo, [0, 0])).match else { Issue.record("wrong size"); return }
        let request = DisplayMessage(header: DisplayMessageHeader(.getDisplayInfo, size: 0), payload: [])
        guard case .broken = fresh.match(request).match else { Issue.record("no reply flag"); return }
    }
}

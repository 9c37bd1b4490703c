import FrontendSide
import CShims
import Testing

@testable import DisplayChannel

@Suite("Display protocol codec")
struct DisplayProtocolTests {
    @Test func requestCodesMatchTheSpec() {
        let expected: [(DisplayRequest, UInt32, String)] = [
            (.getProtocolFeatures, 1, "GET_PROTOCOL_FEATURES"), (.setProtocolFeatures, 2, "SET_PROTOCOL_FEATURES"),
            (.getDisplayInfo, 3, "GET_DISPLAY_INFO"), (.cursorPos, 4, "CURSOR_POS"),
            (.cursorPosHide, 5, "CURSOR_POS_HIDE"), (.cursorUpdate, 6, "CURSOR_UPDATE"), (.scanout, 7, "SCANOUT"),
            (.update, 8, "UPDATE"), (.dmabufScanout, 9, "DMABUF_SCANOUT"), (.dmabufUpdate, 10, "DMABUF_UPDATE"),
            (.getEDID, 11, "GET_EDID"), (.dmabufScanout2, 12, "DMABUF_SCANOUT2"),
        ]
        #expect(DisplayRequest.allCases.count == expected.count)
        for (request, code, name) in expected {
            #expect(request.rawValue == code)
            #expect(request.name == name)
        }
        #expect(DisplayMessageFlags.reply.rawValue == 0x4)
        #expect(DisplayProtocolFeatures.edid.rawValue == 1)
        #expect(DisplayProtocolFeatures.dmabuf2.rawValue == 2)
    }

    @Test func onlyFourRequestsGetReplies() {
        let answered = DisplayRequest.allCases.filter { $0.replyPayloadSize != nil }
        #expect(answered == [.getProtocolFeatures, .getDisplayInfo, .dmabufUpdate, .getEDID])
        #expect(DisplayRequest.dmabufUpdate.replyPayloadSize == 0)
        #expect(DisplayRequest.getProtocolFeatures.replyPayloadSize == 8)
    }

    @Test func replyLayoutsMatchTheKernelStructs() {
        #expect(DisplayInfoReply.byteCount == MemoryLayout<virtio_gpu_resp_display_info>.size)
        #expect(DisplayInfoReply.byteCount == 408)
        #expect(DisplayEDIDReply.byteCount == MemoryLayout<virtio_gpu_resp_edid>.size)
        #expect(DisplayEDIDReply.byteCount == 1056)
        #expect(DisplayCtrlHeader.byteCount == MemoryLayout<virtio_gpu_ctrl_hdr>.size)
        #expect(DisplayCtrlHeader.okDisplayInfo == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
        #expect(DisplayCtrlHeader.okEDID == VIRTIO_GPU_RESP_OK_EDID.rawValue)
        #expect(DisplayInfoReply.maxScanouts == Int(VIRTIO_GPU_MAX_SCANOUTS))
    }

    @Test func headerBytesAreNativeU32s() throws {
        #expect(DisplayMessage.request(.getProtocolFeatures) == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        let reply = DisplayMessage.reply(.getProtocolFeatures, DisplayFeaturesPayload([.edid, .dmabuf2]))
        #expect(reply == [1, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0])
        let header = try DisplayMessageHeader(decoding: Array(reply[0..<12]))
        #expect(header == DisplayMessageHeader(.getProtocolFeatures, flags: .reply, size: 8))
        #expect(throws: DisplayProtocolError.self) { try DisplayMessageHeader(decoding: [1, 2, 3]) }
    }

    @Test func payloadSizes() {
        #expect(DisplayCursorPos.byteCount == 12)
        #expect(DisplayCursorUpdate.byteCount == 20 + 16384)
        #expect(DisplayScanout.byteCount == 12)
        #expect(DisplayUpdateHeader.byteCount == 20)
        #expect(DisplayDMABufScanout.byteCount == 40)
        #expect(DisplayDMABufScanout2.byteCount == 48)
        #expect(DisplayEDIDRequest.byteCount == 4)
    }

    @Test(arguments: samplePayloads.indices)
    func payloadRoundTripsAndExactSize(index: Int) throws {
        let sample = samplePayloads[index]
        let bytes = sample.encode()
        #expect(bytes.count == sample.byteCount)
        #expect(try sample.roundTrip(bytes))
        #expect(throws: DisplayProtocolError.self) { _ = try sample.roundTrip(bytes + [0]) }
        #expect(throws: DisplayProtocolError.self) { _ = try sample.roundTrip(Array(bytes.dropLast())) }
    }

    @Test func displayInfoPadsToSixteenHeads() throws {
        let modes = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1024, height: 768), enabled: true),
                     DisplayMode(rect: PixelRect(x: 1024, y: 0, width: 800, height: 600), enabled: false, flags: 3)]
        let decoded = try DisplayInfoReply(decoding: DisplayInfoReply(modes: modes).encoded())
        #expect(decoded.type == 0x1101)
        #expect(decoded.modes.count == 16)
        #expect(Array(decoded.modes.prefix(2)) == modes)
        #expect(decoded.modes[2] == DisplayMode(rect: PixelRect(x: 0, y: 0, width: 0, height: 0), enabled: false))
    }

    @Test func edidReplyBlobHonoursSize() throws {
        let blob: [UInt8] = (0..<200).map { UInt8($0) }
        let decoded = try DisplayEDIDReply(decoding: DisplayEDIDReply(blob: blob).encoded())
        #expect(decoded.size == 200)
        #expect(decoded.blob == blob)
        var bad = DisplayEDIDReply(blob: blob)
        bad.size = 2000
        #expect(try DisplayEDIDReply(decoding: bad.encoded()).blob == nil)
    }

    @Test func updateSizeRules() throws {
        let header = DisplayUpdateHeader(scanoutID: 0, x: 1, y: 2, width: 3, height: 2)
        #expect(header.updatePayloadSize == UInt32(44))
        let good = DisplayMessage.update(header, pixels: [UInt8](repeating: 7, count: 24))
        let message = try decodeAll(good).first!
        try message.validateAsRequest()
        // One pixel byte short: QEMU would read past the message.
        var short = good
        short.removeLast()
        short[8] = UInt8(truncatingIfNeeded: 20 + 23)
        #expect(throws: DisplayProtocolError.badUpdateSize(width: 3, height: 2, size: 43)) {
            try decodeAll(short).first!.validateAsRequest()
        }
        #expect(DisplayUpdateHeader(scanoutID: 0, x: 0, y: 0, width: 65536, height: 65536).updatePayloadSize == nil)
    }

    @Test func requestValidationChecksFlagsAndSizes() throws {
        let asReply = DisplayMessage(header: DisplayMessageHeader(.scanout, flags: .reply, size: 12),
                                     payload: [UInt8](repeating: 0, count: 12))
        #expect(throws: DisplayProtocolError.self) { try asReply.validateAsRequest() }
        let wrong = DisplayMessage(header: DisplayMessageHeader(.cursorPos, size: 8), payload: [UInt8](repeating: 0, count: 8))
        #expect(throws: DisplayProtocolError.wrongSize(what: "CURSOR_POS", expected: 12, actual: 8)) {
            try wrong.validateAsRequest()
        }
        let unknown = DisplayMessage(header: DisplayMessageHeader(request: 99, size: 0), payload: [])
        #expect(throws: DisplayProtocolError.unknownRequest(99)) { try unknown.validateAsRequest() }
        let reply = try decodeAll(DisplayMessage.reply(.dmabufUpdate)).first!
        try reply.validateAsReply(to: .dmabufUpdate)
        #expect(throws: DisplayProtocolError.self) { try reply.validateAsReply(to: .getDisplayInfo) }
    }

    // MARK: decoder

    @Test func decoderYieldsSameMessagesForEverySplit() throws {
        let stream = sampleStream()
        let whole = try decodeAll(stream)
        #expect(whole.map(\.request) == [.getProtocolFeatures, .setProtocolFeatures, .scanout, .update, .cursorUpdate,
                                         .cursorPos, .getEDID, .getDisplayInfo, .dmabufScanout2, .cursorPosHide,
                                         .dmabufScanout, .dmabufUpdate, .getProtocolFeatures, .getDisplayInfo,
                                         .getEDID, .dmabufUpdate])
        #expect(Set(whole.compactMap(\.request)) == Set(DisplayRequest.allCases))
        for message in whole where !message.isReply { try message.validateAsRequest() }
        for message in whole where message.isReply { try message.validateAsReply(to: message.request!) }
        for split in 0...stream.count {
            var decoder = DisplayMessageDecoder()
            var got: [DisplayMessage] = []
            try stream.withUnsafeBytes { raw in
                try decoder.feed(UnsafeRawBufferPointer(rebasing: raw[0..<split])) { got.append($0) }
                try decoder.feed(UnsafeRawBufferPointer(rebasing: raw[split...])) { got.append($0) }
            }
            #expect(got == whole, "split at \(split)")
            #expect(decoder.isAtMessageBoundary)
        }
    }

    @Test func decoderByteByByte() throws {
        let stream = sampleStream()
        var decoder = DisplayMessageDecoder()
        var got: [DisplayMessage] = []
        for byte in stream {
            try withUnsafeBytes(of: byte) { try decoder.feed($0) { got.append($0) } }
        }
        #expect(try got == decodeAll(stream))
    }

    @Test func decoderDiscardingPixelsCountsThem() throws {
        let stream = sampleStream()
        for split in stride(from: 0, through: stream.count, by: 7) {
            var decoder = DisplayMessageDecoder(discardUpdatePixels: true)
            var got: [DisplayMessage] = []
            try stream.withUnsafeBytes { raw in
                try decoder.feed(UnsafeRawBufferPointer(rebasing: raw[0..<split])) { got.append($0) }
                try decoder.feed(UnsafeRawBufferPointer(rebasing: raw[split...])) { got.append($0) }
            }
            let update = try #require(got.first { $0.request == .update })
            #expect(update.payload.count == 20)
            #expect(update.discardedPayloadBytes == 5 * 3 * 4)
            try update.validateAsRequest()
            #expect(got.count == 16)
        }
    }

    @Test func decoderRejectsOversizedPayload() {
        var decoder = DisplayMessageDecoder(maxPayloadSize: 64)
        let bytes = DisplayMessage.reply(.getEDID, DisplayEDIDReply(blob: []))
        #expect(throws: DisplayProtocolError.payloadTooLarge(size: 1056, limit: 64)) {
            try bytes.withUnsafeBytes { try decoder.feed($0) { _ in } }
        }
    }
}

// MARK: fixtures

struct PayloadSample: Sendable {
    let byteCount: Int
    let encode: @Sendable () -> [UInt8]
    let roundTrip: @Sendable ([UInt8]) throws -> Bool

    init<P: DisplayPayload>(_ value: P) {
        byteCount = P.byteCount
        encode = { value.encoded() }
        roundTrip = { bytes in try P(decoding: bytes) == value }
    }
}

let cursorImage: [UInt8] = (0..<16384).map { UInt8(truncatingIfNeeded: $0 &* 31) }

let samplePayloads: [PayloadSample] = [
    PayloadSample(DisplayCursorPos(scanoutID: 1, x: 2, y: 0xdead_beef)),
    PayloadSample(DisplayCursorUpdate(pos: DisplayCursorPos(scanoutID: 0, x: 5, y: 6), hotX: 7, hotY: 8, pixels: cursorImage)),
    PayloadSample(DisplayScanout(scanoutID: 3, width: 1920, height: 1080)),
    PayloadSample(DisplayUpdateHeader(scanoutID: 1, x: 2, y: 3, width: 4, height: 5)),
    PayloadSample(DisplayDMABufScanout(scanoutID: 0, x: 1, y: 2, width: 3, height: 4, fdWidth: 5, fdHeight: 6,
                                       fdStride: 7, fdFlags: 1, fourcc: -12345)),
    PayloadSample(DisplayDMABufScanout2(scanout: DisplayDMABufScanout(scanoutID: 2, width: 640, height: 480, fdWidth: 640,
                                                                      fdHeight: 480, fdStride: 2560, fourcc: 0x3432_5258),
                                        modifier: 0x0100_0000_0000_0002)),
    PayloadSample(DisplayEDIDRequest(scanoutID: 9)),
    PayloadSample(DisplayFeaturesPayload([.edid, .dmabuf2])),
    PayloadSample(DisplayInfoReply(modes: (0..<16).map {
        DisplayMode(rect: PixelRect(x: UInt32($0), y: 1, width: 2, height: 3), enabled: $0 % 2 == 0, flags: UInt32($0))
    })),
    PayloadSample(DisplayEDIDReply(blob: DisplayChannelPeer.sampleEDID)),
]

func sampleStream() -> [UInt8] {
    var s: [UInt8] = []
    s += DisplayMessage.request(.getProtocolFeatures)
    s += DisplayMessage.request(.setProtocolFeatures, DisplayFeaturesPayload(.edid))
    s += DisplayMessage.request(.scanout, DisplayScanout(scanoutID: 0, width: 5, height: 3))
    s += DisplayMessage.update(DisplayUpdateHeader(scanoutID: 0, x: 0, y: 0, width: 5, height: 3),
                               pixels: (0..<60).map { UInt8($0) })
    s += DisplayMessage.request(.cursorUpdate, DisplayCursorUpdate(pos: DisplayCursorPos(scanoutID: 0, x: 1, y: 2),
                                                                   hotX: 3, hotY: 4, pixels: cursorImage))
    s += DisplayMessage.request(.cursorPos, DisplayCursorPos(scanoutID: 0, x: 10, y: 20))
    s += DisplayMessage.request(.getEDID, DisplayEDIDRequest(scanoutID: 0))
    s += DisplayMessage.request(.getDisplayInfo)
    s += DisplayMessage.request(.dmabufScanout2, DisplayDMABufScanout2(
        scanout: DisplayDMABufScanout(scanoutID: 0, width: 4, height: 4, fdWidth: 4, fdHeight: 4, fdStride: 16, fourcc: 1),
        modifier: 0))
    s += DisplayMessage.request(.cursorPosHide, DisplayCursorPos(scanoutID: 0, x: 0, y: 0))
    s += DisplayMessage.request(.dmabufScanout, DisplayDMABufScanout(scanoutID: 0, width: 4, height: 4, fdWidth: 4,
                                                                     fdHeight: 4, fdStride: 16, fourcc: 1))
    s += DisplayMessage.request(.dmabufUpdate, DisplayUpdateHeader(scanoutID: 0, x: 0, y: 0, width: 4, height: 4))
    // QEMU's replies go through the same decoder on the backend side.
    s += DisplayMessage.reply(.getProtocolFeatures, DisplayFeaturesPayload([.edid, .dmabuf2]))
    s += DisplayMessage.reply(.getDisplayInfo, DisplayInfoReply(modes: [
        DisplayMode(rect: PixelRect(x: 0, y: 0, width: 1024, height: 768), enabled: true)]))
    s += DisplayMessage.reply(.getEDID, DisplayEDIDReply(blob: DisplayChannelPeer.sampleEDID))
    s += DisplayMessage.reply(.dmabufUpdate)
    return s
}

func decodeAll(_ bytes: [UInt8]) throws -> [DisplayMessage] {
    var decoder = DisplayMessageDecoder()
    var out: [DisplayMessage] = []
    try bytes.withUnsafeBytes { try decoder.feed($0) { out.append($0) } }
    return out
}

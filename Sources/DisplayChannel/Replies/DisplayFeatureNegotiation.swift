// The display protocol feature exchange: GET_PROTOCOL_FEATURES goes out when the sink starts
// (without waiting: the caller is the vhost-user thread, and QEMU answers only after it has the
// vhost-user reply); its reply is read by the first call that needs the features, or early and
// for free by a send that finds the reader idle. The sink then enables what both sides know and
// sends SET_PROTOCOL_FEATURES.

import Synchronization

/// The features both sides enabled, once known; read lock-free on every send.
final class DisplayNegotiatedFeatures: Sendable {
    private static let negotiatedBit: UInt64 = 1 << 63
    /// 0 until negotiated; then `negotiatedBit | features`.
    private let value = Atomic<UInt64>(0)

    init() {}

    var features: DisplayProtocolFeatures? {
        let v = value.load(ordering: .acquiring)
        return v == 0 ? nil : DisplayProtocolFeatures(rawValue: v & ~Self.negotiatedBit)
    }

    /// Cheap check for the hot path (may be stale; `features` is the ordered read).
    var isKnownRelaxed: Bool { value.load(ordering: .relaxed) != 0 }

    func record(_ agreed: DisplayProtocolFeatures) {
        value.store(Self.negotiatedBit | agreed.rawValue, ordering: .releasing)
    }
}

extension VhostUserGPUDisplay {
    /// Sends GET_PROTOCOL_FEATURES at start; its reply is owed to the negotiation.
    func startNegotiation() {
        receiver.withLock { state in
            if sendMessage(.getProtocolFeatures, DisplayNoPayload()) {
                state.replies.owe(.getProtocolFeatures, role: .negotiation)
            }
        }
    }

    /// With `receiver` held: the negotiated features, reading QEMU's reply (bounded) if needed.
    func negotiate(_ state: inout DisplayReceiveState, deadline: ContinuousClock.Instant) -> DisplayProtocolFeatures? {
        if let f = protocolFeatures { return f }
        guard state.open, !isBroken, state.replies.owesNegotiation else { return nil }
        _ = pump(&state, deadline: deadline) { _ in self.protocolFeatures != nil }
        return protocolFeatures
    }

    /// Reads whatever replies are already there, without waiting, if no one else is reading:
    /// finishes the feature exchange as early as possible without ever blocking the hot path.
    func pollNegotiation() {
        guard !negotiatedFeatures.isKnownRelaxed else { return }
        _ = receiver.withLockIfAvailable { state in
            guard state.open, state.replies.owesNegotiation else { return }
            _ = pump(&state, deadline: nil) { _ in self.protocolFeatures != nil }
        }
    }

    /// Handles the GET_PROTOCOL_FEATURES reply: enables what both sides know, sends
    /// SET_PROTOCOL_FEATURES.
    func applyNegotiation(_ message: DisplayMessage) {
        guard let offered = try? DisplayFeaturesPayload(decoding: message.payload).features else { return }
        let agreed = offered.intersection(options.supportedFeatures)
        _ = sendMessage(.setProtocolFeatures, DisplayFeaturesPayload(agreed))
        negotiatedFeatures.record(agreed)
        logger.info("display protocol features: QEMU offers \(offered), enabled \(agreed)")
    }
}

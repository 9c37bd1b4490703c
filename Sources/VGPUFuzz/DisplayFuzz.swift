import DisplayChannel
import SystemPackage
import VhostUser
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The display socket's replies as QEMU sends them back: the input is the byte stream QEMU's
/// side writes, read by the real display channel while it asks for display info, an EDID,
/// sends a scanout, an update, a cursor and a dmabuf update. Each message decoder also gets
/// the raw input.
enum DisplayFuzz {
    nonisolated(unsafe) static var pixels = [UInt8](repeating: 0x55, count: 16 * 16 * 4)

    static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        _ = try? DisplayMessageHeader(decoding: bytes)
        _ = try? DisplayInfoReply(decoding: bytes)
        _ = try? DisplayEDIDReply(decoding: bytes)
        _ = try? DisplayFeaturesPayload(decoding: bytes)
        _ = try? DisplayUpdateHeader(decoding: bytes)
        _ = try? DisplayDMABufScanout2(decoding: bytes)
        var decoder = DisplayMessageDecoder(maxPayloadSize: 1 << 20, discardUpdatePixels: data.first.map { $0 & 1 == 0 } ?? true)
        try? decoder.feed(data) { _ in }
        guard let (a, b) = try? UnixSocket.pair() else { return }
        let options = VhostUserGPUDisplay.Options(timeout: .milliseconds(5), dmabufUpdateTimeout: .milliseconds(5))
        guard let display = try? VhostUserGPUDisplay(socket: FileDescriptor(rawValue: dup(b.rawValue)), options: options,
                                                     logger: quietLogger()) else { return }
        _ = bytes.withUnsafeBytes { write(a.rawValue, $0.baseAddress, $0.count) }
        shutdown(a.rawValue, Int32(SHUT_WR))
        _ = display.displayInfo()
        _ = display.edid(scanout: 0)
        display.setScanout(0, width: 16, height: 16)
        pixels.withUnsafeBytes { display.update(scanout: 0, rect: PixelRect(x: 0, y: 0, width: 16, height: 16), pixels: $0.baseAddress!, stride: 64) }
        _ = display.updateDMABuf(0, rect: PixelRect(x: 0, y: 0, width: 16, height: 16))
        _ = display.protocolFeatures
        display.close()
        withExtendedLifetime((a, b)) {}
    }
}

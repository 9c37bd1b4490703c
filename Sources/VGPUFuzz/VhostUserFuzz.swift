import CShims
import Synchronization
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// A device with two queues and a 16-byte config space that answers every chain with a byte.
final class FuzzDevice: VhostUserDevice {
    let queueCount = 2
    let maxQueueSize: UInt16 = 256
    let deviceFeatures: UInt64 = 1 << 3
    var protocolFeatures: VhostUserProtocolFeatures { [.config] }
    func readConfig(offset: Int, count: Int) -> [UInt8]? {
        guard offset >= 0, count >= 0, offset <= 16, count <= 16 - offset else { return nil }
        return [UInt8](repeating: 7, count: count)
    }
    func writeConfig(offset: Int, bytes: [UInt8]) -> Bool { offset >= 0 && offset + bytes.count <= 16 }
    func handleChain(queue: Int, chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        var w = ChainWriter(chain: chain, memory: memory)
        var b: UInt8 = 1
        return (try? withUnsafeBytes(of: &b) { try w.write($0) }) != nil ? 1 : 0
    }
    func reset() {}
    func disconnected() {}
}

/// A vhost-user connection: the input is a sequence of messages (request, flags, payload) sent
/// through the real codec to the real connection state machine; fds (memfd guest RAM,
/// eventfds) ride along as a byte per message says. The connection ends at EOF.
enum VhostUserFuzz {
    nonisolated(unsafe) static var ramFD: Int32 = -1

    static func makeRAM() -> Int32 {
        if ramFD >= 0 { return ramFD }
        let fd = vgpu_memfd_create("vgpu-fuzz-vu", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        precondition(fd >= 0 && ftruncate(fd, 1 << 16) == 0)
        _ = vgpu_memfd_add_seals(fd, vgpu_F_SEAL_SHRINK() | vgpu_F_SEAL_GROW())
        ramFD = fd
        return fd
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        guard let (a, b) = try? UnixSocket.pair() else { return }
        let connection = VhostUserConnection(socket: b, device: FuzzDevice(), logger: quietLogger(), backendAckTimeout: 0.01)
        let peer = a.rawValue
        // Every message is written before the connection runs, and the connection then runs on
        // this thread until EOF: the same message sequence through the same state machine, but
        // no thread started and joined per input (that was most of the 706-816 exec/s). The
        // frontend side is non-blocking so a send that would not fit ends the input instead of
        // waiting for a reader that is not running yet; the replies (tens of bytes each, 48
        // messages at most) fit in the socket's buffer and are drained afterwards.
        try? setNonBlocking(peer)
        var input = FuzzInput(data)
        let ram = makeRAM()
        var messages = 0
        while !input.atEnd, messages < 48 {
            messages += 1
            let request = UInt32(input.u8() % 48)
            let flagsByte = input.u8()
            // Mostly version 1 (0x1) with NEED_REPLY sometimes; a bad version now and then.
            let flags: UInt32 = flagsByte & 0xE0 == 0xE0 ? UInt32(flagsByte) : (0x1 | (flagsByte & 1 != 0 ? 0x8 : 0))
            let payload = input.bytes(Int(input.u8()) + (flagsByte & 0x10 != 0 ? Int(input.u8()) << 8 : 0))
            let fdKinds = input.u8()
            var fds: [Int32] = []
            for k in 0..<Int(fdKinds % 4) {
                fds.append(fdKinds & (0x10 << k) != 0 ? dup(ram) : eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)))
            }
            let header = VhostUserHeader(request: request, flags: flags, size: UInt32(payload.count))
            let sent = (try? UnixSocket.send(peer, [header.bytes, payload], fds: fds)) != nil
            for fd in fds { close(fd) }
            if !sent { break }
        }
        shutdown(peer, Int32(SHUT_WR))
        connection.run()
        var sink = [UInt8](repeating: 0, count: 4096)
        while read(peer, &sink, sink.count) > 0 {}
        withExtendedLifetime(a) {}
    }
}

import Foundation
import FrontendSide
import VGPUTestSupport
import Logging
import VhostUser
import VirtioCore
import SystemSupport

/// A one-queue device that copies every request back reversed: enough to exercise the server.
final class EchoDevice: VhostUserDevice {
    let queueCount = 1
    let maxQueueSize: UInt16 = 256
    let deviceFeatures: UInt64 = 1 << 3
    var protocolFeatures: VhostUserProtocolFeatures { [.config] }
    let config = Mutex<[UInt8]>(Array(0..<16))
    let events = Mutex<[String]>([])

    func readConfig(offset: Int, count: Int) -> [UInt8]? {
        config.withLock { c in offset >= 0 && count >= 0 && offset + count <= c.count ? Array(c[offset..<offset + count]) : nil }
    }
    func writeConfig(offset: Int, bytes: [UInt8]) -> Bool {
        config.withLock { c in
            guard offset >= 0, offset + bytes.count <= c.count else { return false }
            c.replaceSubrange(offset..<offset + bytes.count, with: bytes)
            return true
        }
    }
    func handleChain(queue: Int, chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        var reader = ChainReader(chain: chain, memory: memory)
        var writer = ChainWriter(chain: chain, memory: memory)
        var bytes = [UInt8](repeating: 0, count: reader.remaining)
        do {
            try bytes.withUnsafeMutableBytes { try reader.read(into: $0) }
            bytes.reverse()
            let n = min(bytes.count, writer.available)
            try bytes.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        } catch { return 0 }
        return UInt32(writer.bytesWritten)
    }
    func reset() { events.withLock { $0.append("reset") } }
    func disconnected() { events.withLock { $0.append("disconnected") } }
}

/// A device served on a thread and a frontend that started it with 1 MiB of guest RAM and one
/// 64-entry queue. Everything one test holds; dropping it closes the frontend socket (a disconnect).
struct StartedDevice<Device: VhostUserDevice> {
    let device: Device
    let served: ServedDevice
    let f: VhostUserFrontend
    let ram: GuestRAM
    let queue: DriverQueue

    init(_ device: Device) throws {
        self.device = device
        served = try ServedDevice(device)
        f = VhostUserFrontend(socket: served.frontendSocket)
        ram = try GuestRAM(size: 1 << 20)
        queue = try DriverQueue(ram: ram, size: 64)
        try f.start(ram: ram, queues: [queue])
    }
}

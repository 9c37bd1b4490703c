import CShims
import DisplayChannel
import Foundation
import VhostUser
import FrontendSide
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// A `vgpu-backend` child on its own vhost-user and control sockets, driven by the Swift frontend
/// (memfd guest RAM sealed like QEMU's, real eventfds) with a QEMU-like display peer.
final class BackendSession {
    let name: String
    let socketPath: String
    let controlSocket: String
    let logPath: String
    private(set) var process: Child!
    private(set) var driver: VirtioGPUDriver!
    private(set) var peer: DisplayChannelPeer!

    /// Starts `backend --socket-path S --control-socket C arguments...` and connects to it.
    init(backend: String, arguments: [String], work: WorkDirectory, name: String, ramSize: UInt64 = 16 << 20) throws {
        self.name = name
        socketPath = work.file("\(name).sock")
        controlSocket = work.file("\(name)-ctl.sock")
        logPath = work.file("\(name)-backend.log")
        let log = try openForWriting(logPath), null = openDevNull()
        defer { close(log); close(null) }
        process = try Child(backend, ["--socket-path", socketPath, "--control-socket", controlSocket] + arguments,
                            stdin: null, stdout: log, stderr: log)

        // The backend binds the control socket first, then the vhost-user one.
        let deadline = Date().addingTimeInterval(60)
        var socket: OwnedFileDescriptor?
        while socket == nil {
            if let status = process.status {
                throw CheckError("\(backend) exited with status \(status) before listening: \(logTail())")
            }
            if FileManager.default.fileExists(atPath: socketPath) { socket = try? UnixSocket.connect(path: socketPath) }
            if socket == nil {
                if Date() > deadline { throw CheckError("\(socketPath) not connectable after 60s: \(logTail())") }
                usleep(20_000)
            }
        }
        let frontend = VhostUserFrontend(socket: socket!)
        do {
            driver = try VirtioGPUDriver(frontend: frontend, ramSize: ramSize)
            driver.timeout = 60   // TCG: every step is slow
            let (peer, fd) = try DisplayChannelPeer.connected()
            self.peer = peer
            try frontend.gpuSetSocket(fd.rawValue)
            try fd.close()
        } catch {
            throw CheckError("vhost-user start-up with \(name): \(error); backend log: \(logTail())")
        }
    }

    var ram: GuestRAM { driver.ram }

    /// The last lines of the backend's log, on one line.
    func logTail(_ lines: Int = 12) -> String {
        let text = read(logPath).split(separator: "\n").suffix(lines).joined(separator: " | ")
        return text.isEmpty ? "(backend log empty)" : text
    }

    /// Disconnects (the backend then exits by itself) and waits; SIGTERM after `timeout`.
    func stop(timeout: Double = 10) {
        driver?.frontend.disconnect()
        peer?.close()
        if process.wait(timeout: timeout) == nil { process.stop(grace: 5) }
    }

    // MARK: commands

    func check(_ r: VirtioGPUDriver.Response, _ what: String) throws {
        guard r.type == VIRTIO_GPU_RESP_OK_NODATA.rawValue else {
            throw CheckError("\(what): response 0x\(String(r.type, radix: 16)); backend log: \(logTail(4))")
        }
    }

    /// RESOURCE_ASSIGN_UUID; the UUID as text.
    func assignUUID(_ id: UInt32) throws -> String {
        let r = try driver.assignUUID(id: id)
        guard r.type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue, let u = r.load(virtio_gpu_resp_resource_uuid.self) else {
            throw CheckError("ASSIGN_UUID of \(id): response 0x\(String(r.type, radix: 16)); backend log: \(logTail(4))")
        }
        return formatUUID(withUnsafeBytes(of: u.uuid) { Array($0) })
    }

    /// Writes `bytes` over the backing `ranges` in order (what a guest's CPU does to its pages).
    func writeGuest(_ bytes: [UInt8], over ranges: [(GuestPhysicalAddress, Int)]) {
        var offset = 0
        for (address, length) in ranges where offset < bytes.count {
            let n = min(length, bytes.count - offset)
            ram.write(Array(bytes[offset..<(offset + n)]), at: address)
            offset += n
        }
    }
}

func formatUUID(_ b: [UInt8]) -> String {
    let h = b.map { String(format: "%02x", $0) }
    return [h[0..<4], h[4..<6], h[6..<8], h[8..<10], h[10..<16]].map { $0.joined() }.joined(separator: "-")
}

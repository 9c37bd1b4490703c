import CImportWire
import CShims
import ControlProtocol
import ControlServer
import DisplayChannel
import Foundation
import ImportDevice
import Synchronization
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// A `vgpu-backend` process under test: its fds and RSS read from /proc, its stderr in a file.
final class BackendUnderTest {
    let backend: RunningBinary
    let dir: URL
    let socket: String
    let control: String
    let logPath: String

    /// `nofile`: starts it under `ulimit -n` (through /bin/sh, exec'd: same pid).
    init(tag: String, extra: [String] = [], nofile: Int? = nil) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-fault-\(tag)-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        socket = dir.appendingPathComponent("gpu.sock").path
        control = dir.appendingPathComponent("ctl.sock").path
        logPath = dir.appendingPathComponent("backend.log").path
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let args = ["--socket-path", socket, "--control-socket", control, "--keep-running"] + extra
        let stderr = FileHandle(forWritingAtPath: logPath)
        if let nofile {
            backend = try RunningBinary("/bin/sh", ["-c", "ulimit -n \(nofile) && exec \"$0\" \"$@\"", testBinDir + "/vgpu-backend"] + args,
                                        sockets: [socket, control], standardError: stderr)
        } else {
            backend = try RunningBinary(testBinDir + "/vgpu-backend", args, sockets: [socket, control], standardError: stderr)
        }
    }

    var pid: Int32 { backend.pid }
    var alive: Bool { backend.isRunning }

    /// The backend's open fds as "number→target".
    var fds: Set<String> { openFDSet(pid: pid) }

    /// Waits until the backend's fd set is `baseline` again; returns what is still extra.
    func fdsBack(to baseline: Set<String>, timeout: Double = 5) -> Set<String> {
        fdsLeaked(since: baseline, timeout: timeout, pid: pid)
    }

    /// VmRSS in KiB.
    var rssKiB: Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return -1 }
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }

    /// utime + stime of the process, in clock ticks.
    var cpuTicks: Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return 0 }
        let fields = s[s.index(after: close)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func connect() throws -> (VhostUserFrontend, VirtioGPUDriver, DisplayChannelPeer) {
        try connectGPU(path: socket)
    }

    func stop() {
        backend.kill()
        try? FileManager.default.removeItem(at: dir)
    }
}

/// A non-blocking connect (a full backlog answers EAGAIN instead of blocking); nil if refused.
func connectNonBlocking(_ path: String) -> OwnedFileDescriptor? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    let owned = OwnedFileDescriptor(fd)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    return rc == 0 ? owned : nil
}

/// The UUID string ASSIGN_UUID answered (what the control socket's `export` takes).
func assignedUUID(_ d: VirtioGPUDriver, id: UInt32) throws -> String {
    try #require(try d.assignUUID(id: id).resourceUUID.flatMap { ResourceUUID(bytes: $0) }).description
}

/// Issue 11 §4: faults injected with real processes. In each case the backend keeps serving,
/// releases every fd and mapping of the dead side, and says what happened in its log.
@Suite(.serialized) struct FaultInjectionTests {
    /// One short session, so lazily made fds (the render path, the log) exist for the baseline.
    func warmUp(_ b: BackendUnderTest) throws {
        let (f, d, _) = try b.connect()
        #expect(try d.createResource2D(id: 1, width: 16, height: 16).type == OK)
        f.disconnect()
    }

    /// A frontend (QEMU) that dies in the middle of 1080p transfers: its socket closes while
    /// transfers are queued. 20 times on a --keep-running backend: it keeps serving, its fd set
    /// comes back to the baseline, RSS stays flat, and each death is one log line.
    @Test func frontendDiesMidTransferAndReconnectsManyTimes() throws {
        let b = try BackendUnderTest(tag: "kill")
        defer { b.stop() }
        try warmUp(b)
        usleep(200_000)
        let baseline = b.fds
        let rssBefore = b.rssKiB
        let rounds = 20
        for _ in 0..<rounds {
            let (f, d, _) = try b.connect()
            d.timeout = 0.5
            let w: UInt32 = 1920, h: UInt32 = 1080
            let backing = d.ram.allocate(Int(w * h * 4), alignment: 4096)
            #expect(try d.createResource2D(id: 1, width: w, height: h).type == OK)
            #expect(try d.attachBacking(id: 1, entries: [(backing, w * h * 4)]).type == OK)
            let transfers = DispatchSemaphore(value: 0)
            final class Box: @unchecked Sendable { let d: VirtioGPUDriver; init(_ d: VirtioGPUDriver) { self.d = d } }
            let box = Box(d)   // used by that thread only until it signals
            startThread(name: "transfers") {
                for _ in 0..<50 { if (try? box.d.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h))) == nil { break } }
                transfers.signal()
            }
            usleep(30_000)
            f.disconnect()   // dead: nothing more is read or written on this connection
            transfers.wait()
        }
        #expect(b.alive)
        #expect(b.fdsBack(to: baseline).isEmpty, "backend fds left: \(b.fds.subtracting(baseline))")
        // Each connection's guest RAM (64 MiB memfd) and 8 MiB host copy are unmapped again.
        #expect(b.rssKiB - rssBefore < 48 * 1024, "RSS \(rssBefore) → \(b.rssKiB) KiB")
        #expect(b.log.components(separatedBy: "frontend disconnected").count - 1 >= rounds)
        // And it serves the next frontend.
        let (f, d, _) = try b.connect()
        #expect(try d.createResource2D(id: 7, width: 8, height: 8).type == OK)
        f.disconnect()
    }

    /// `ulimit -n 64`: one frontend makes resources until their memfds run out, and control
    /// clients connect until accept(2) fails. The backend answers ERR_OUT_OF_MEMORY for what it
    /// cannot make, never dies or spins, and serves again once the fds are back.
    @Test func underUlimit64TheBackendRefusesAndLives() throws {
        let b = try BackendUnderTest(tag: "ulimit", nofile: 64)
        defer { b.stop() }
        try warmUp(b)
        usleep(200_000)
        let baseline = b.fds
        let (f, d, _) = try b.connect()
        d.timeout = 2
        var made = 0, refused = 0
        for id in UInt32(1)...100 {
            let r = try d.createResource2D(id: id, width: 64, height: 64)
            if r.type == OK { made += 1 } else if r.type == VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY.rawValue { refused += 1 }
        }
        #expect(refused > 0 && made > 0, "made \(made), refused \(refused)")
        // Control clients past the limit: accept fails for some; the backend stays up.
        var clients: [OwnedFileDescriptor] = []
        for _ in 0..<80 { if let c = connectNonBlocking(b.control) { clients.append(c) } else { break } }
        usleep(300_000)
        let cpu0 = b.cpuTicks
        usleep(500_000)
        #expect(b.cpuTicks - cpu0 < 25, "the backend spins on EMFILE: \(b.cpuTicks - cpu0) ticks in 0.5 s")
        #expect(b.alive)
        clients.removeAll()
        // Unref frees the fds: creation works again.
        for id in UInt32(1)...100 { _ = try d.unref(id: id) }
        #expect(try d.createResource2D(id: 1, width: 64, height: 64).type == OK)
        f.disconnect()
        #expect(b.fdsBack(to: baseline).isEmpty, "backend fds left: \(b.fds.subtracting(baseline))")
        let (f2, d2, _) = try b.connect()
        #expect(try d2.createResource2D(id: 1, width: 64, height: 64).type == OK)
        #expect((try? ControlClient(path: b.control).call(.list)) != nil, "the control socket serves again")
        f2.disconnect()
        #expect(b.alive)
    }

    /// Control clients that vanish in the middle of an export (request sent, socket closed
    /// before the fd is read), 200 times: every exported fd the backend dup'ed is closed again.
    @Test func controlClientVanishesMidExport() throws {
        let b = try BackendUnderTest(tag: "ctl")
        defer { b.stop() }
        let (f, d, _) = try b.connect()
        let backing = d.ram.allocate(64 * 64 * 4, alignment: 4096)
        #expect(try d.createResource2D(id: 1, width: 64, height: 64).type == OK)
        #expect(try d.attachBacking(id: 1, entries: [(backing, 64 * 64 * 4)]).type == OK)
        let uuid = try assignedUUID(d, id: 1)
        // One export done properly first (makes the host buffer).
        let (_, fd) = try ControlClient(path: b.control).call(.export, resource: uuid)
        #expect(fd != nil)
        usleep(200_000)
        let baseline = b.fds
        let line = ControlCodec.encodeLine(ControlRequest(id: 1, method: .export, resource: uuid))
        for _ in 0..<200 {
            let s = try UnixSocket.connect(path: b.control)
            try UnixSocket.send(s.rawValue, [line])
            _ = s   // closed here, the answer (and its fd) unread
        }
        #expect(b.alive)
        #expect(b.fdsBack(to: baseline).isEmpty, "backend fds left: \(b.fds.subtracting(baseline))")
        #expect(try d.getDisplayInfo().type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
        f.disconnect()
    }

    /// The display peer (QEMU's display side) vanishes in the middle of a 1080p UPDATE: it reads
    /// a little of the 8 MiB message and closes. The flush is answered, the device keeps serving
    /// and the channel's fd is released.
    @Test func displayPeerVanishesMidUpdate() throws {
        let b = try BackendUnderTest(tag: "display")
        defer { b.stop() }
        try warmUp(b)
        usleep(200_000)
        let baseline = b.fds
        let f = try VhostUserFrontend(path: b.socket)
        let d = try VirtioGPUDriver(frontend: f)
        let (mine, theirs) = try UnixSocket.pair()
        try f.gpuSetSocket(theirs.rawValue)
        _ = theirs
        let w: UInt32 = 1920, h: UInt32 = 1080
        let backing = d.ram.allocate(Int(w * h * 4), alignment: 4096)
        #expect(try d.createResource2D(id: 1, width: w, height: h).type == OK)
        #expect(try d.attachBacking(id: 1, entries: [(backing, w * h * 4)]).type == OK)
        // The peer answers nothing, reads the first 64 KiB of what comes (the SCANOUT and the
        // start of the frame's UPDATE), then is gone.
        let reader = DispatchSemaphore(value: 0)
        startThread(name: "half-reader") {
            var buf = [UInt8](repeating: 0, count: 65536)
            _ = read(mine.rawValue, &buf, buf.count)   // a little of the stream, then gone
            _ = shutdown(mine.rawValue, Int32(SHUT_RDWR))
            reader.signal()
        }
        #expect(try d.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)).type == OK)
        reader.wait()
        #expect(try d.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)).type == OK)
        #expect(try d.getDisplayInfo().type == VIRTIO_GPU_RESP_OK_DISPLAY_INFO.rawValue)
        f.disconnect()
        withExtendedLifetime(mine) {}
        #expect(b.alive)
        #expect(b.fdsBack(to: baseline).isEmpty, "backend fds left: \(b.fds.subtracting(baseline))")
    }

    /// The guest reboots (RESET_DEVICE) while a consumer holds an exported buffer: the
    /// consumer's fd and mapping stay valid (they are its own), the backend drops the resource
    /// and its UUID and keeps serving.
    @Test func guestRebootsWhileAConsumerHoldsAnExport() throws {
        let b = try BackendUnderTest(tag: "reboot")
        defer { b.stop() }
        let (f, d, _) = try b.connect()
        let pixels = pixelPattern(64, 64, seed: 3)
        let backing = d.ram.allocate(pixels.count, alignment: 4096)
        d.ram.write(pixels, at: backing)
        #expect(try d.createResource2D(id: 1, width: 64, height: 64).type == OK)
        #expect(try d.attachBacking(id: 1, entries: [(backing, UInt32(pixels.count))]).type == OK)
        #expect(try d.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, 64, 64)).type == OK)
        let uuid = try assignedUUID(d, id: 1)
        let (result, held) = try ControlClient(path: b.control).call(.export, resource: uuid)
        let fd = try #require(held)
        let size = try #require(result.buffer?.size)
        let map = try #require(mmap(nil, size, PROT_READ, MAP_SHARED, fd.rawValue, 0))
        defer { munmap(map, size) }
        // The reboot.
        #expect(try f.resetDevice())
        f.disconnect()
        usleep(200_000)
        #expect(b.alive)
        #expect(Array(UnsafeRawBufferPointer(start: map, count: 16)) == Array(pixels[0..<16]), "the consumer's mapping still reads")
        let list = try ControlClient(path: b.control).call(.list).0
        #expect((list.devices ?? []).allSatisfy { $0.resources.isEmpty }, "the backend dropped the resource")
        let (f2, d2, _) = try b.connect()
        #expect(try d2.createResource2D(id: 1, width: 8, height: 8).type == OK)
        f2.disconnect()
    }

    /// The importer device when vgpu-backend (its control socket) dies while a handle is held:
    /// the handle is revoked, and the importer keeps answering (the next IMPORT is NOT_FOUND).
    @Test func importerSurvivesTheBackendsDeath() throws {
        let b = try BackendUnderTest(tag: "importer")
        defer { b.stop() }
        let (_, d, _) = try b.connect()
        _ = try d.makeResource(id: 1, width: 8, height: 8, pixels: pixelPattern(8, 8))
        let uuid = try #require(try d.assignUUID(id: 1).resourceUUID)

        let device = try ImportVhostUserDevice(options: ImportDeviceOptions(controlSockets: [b.control], sharedObjectLookup: false,
                                                                            maxHandles: 8, holder: "fault-test"),
                                               logger: GPURig.logger())
        defer { device.shutdown() }
        let served = try ServedDevice(device, logger: GPURig.logger(), threadName: "imp-conn")
        let importer = try ImportDriver(frontend: VhostUserFrontend(socket: served.frontendSocket), backendChannel: nil)
        let imported = try importer.importUUID(uuid)
        #expect(imported.status == 0)
        b.backend.kill()
        #expect(try importer.query(imported.handle).status == UInt16(VGPU_IMPORT_STATUS_REVOKED))
        let again = try importer.importUUID(uuid).status
        #expect(again == UInt16(VGPU_IMPORT_STATUS_NOT_FOUND) || again == UInt16(VGPU_IMPORT_STATUS_ERROR), "status \(again)")
        #expect(try importer.identify().status == 0)
        importer.frontend.disconnect()
        #expect(served.waitFinished(timeout: 5))
    }
}

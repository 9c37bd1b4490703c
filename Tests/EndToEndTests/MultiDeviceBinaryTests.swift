import CShims
import VirtioCore
import ControlProtocol
import ControlServer
import DisplayChannel
import Foundation
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioGPU
import SystemSupport

/// One `vgpu-backend` process serving several sockets: each is a device of its own, all in one
/// UUID registry and one control socket.
@Suite(.serialized) struct MultiDeviceBinaryTests {
    struct Backend {
        let binary: RunningBinary
        var process: Process { binary.process }
        let dir: URL
        let sockets: [String]
        let control: String
    }

    func launch(sockets count: Int, extra: [String] = [], tag: String) throws -> Backend {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-multi-\(tag)-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let sockets = (0..<count).map { dir.appendingPathComponent("gpu\($0).sock").path }
        let control = dir.appendingPathComponent("ctl.sock").path
        let binary = try RunningBinary(testBinDir + "/vgpu-backend",
                                       sockets.flatMap { ["--socket-path", $0] } + ["--control-socket", control] + extra,
                                       sockets: sockets + [control])
        return Backend(binary: binary, dir: dir, sockets: sockets, control: control)
    }

    func stop(_ b: Backend) {
        b.binary.stop(grace: 5)
        try? FileManager.default.removeItem(at: b.dir)
    }

    @Test func twoSocketsAreTwoDevicesInOneRegistry() throws {
        let b = try launch(sockets: 2, tag: "two")
        defer { stop(b) }
        let (fa, da, _pa) = try connectGPU(path: b.sockets[0])
        let (fb, db, _pb) = try connectGPU(path: b.sockets[1])
        _ = (_pa, _pb)
        // The same guest resource id on both devices.
        #expect(try da.createResource2D(id: 1, width: 8, height: 8).type == OK)
        #expect(try db.createResource2D(id: 1, width: 8, height: 8).type == OK)
        let ra = try da.assignUUID(id: 1), rb = try db.assignUUID(id: 1)
        #expect(ra.type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue && rb.type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue)
        let ua = try #require(ra.resourceUUID.flatMap { ResourceUUID(bytes: $0) })
        let ub = try #require(rb.resourceUUID.flatMap { ResourceUUID(bytes: $0) })
        #expect(ua != ub)

        // The control socket lists both devices, each with its own socket as label.
        let client = try ControlClient(path: b.control)
        let devices = try #require(try client.call(.list).0.devices)
        #expect(devices.count == 2)
        #expect(Set(devices.map(\.label)) == Set(b.sockets))
        #expect(Set(devices.map(\.id)).count == 2)
        let deviceA = try #require(devices.first { $0.label == b.sockets[0] })
        let deviceB = try #require(devices.first { $0.label == b.sockets[1] })
        #expect(deviceA.resources.map(\.uuid) == [ua.description])
        #expect(deviceB.resources.map(\.uuid) == [ub.description])
        // Each UUID resolves to its own device, through the one registry.
        let showA = try #require(try client.call(.show, resource: ua.description).0.detail)
        let showB = try #require(try client.call(.show, resource: ub.description).0.detail)
        #expect(showA.resource.device == deviceA.id && showA.deviceLabel == b.sockets[0] && showA.resource.id == 1)
        #expect(showB.resource.device == deviceB.id && showB.deviceLabel == b.sockets[1] && showB.resource.id == 1)
        // The bare id is ambiguous across the two devices; DEVICE:ID is not.
        #expect(throws: ControlClientError.self) { _ = try client.call(.show, resource: "1") }
        #expect(try client.call(.show, resource: "\(deviceB.id):1").0.detail?.resource.uuid == ub.description)

        // One frontend gone: the other device keeps serving, and the process keeps running.
        fa.disconnect()
        usleep(300_000)
        #expect(b.process.isRunning)
        #expect(!FileManager.default.fileExists(atPath: b.sockets[0]))   // served its one frontend
        #expect(try db.createResource2D(id: 2, width: 8, height: 8).type == OK)
        let after = try #require(try ControlClient(path: b.control).call(.list).0.devices)
        #expect(after.map(\.label) == [b.sockets[1]])
        // The last one gone: the process exits, cleanly.
        fb.disconnect()
        b.binary.waitForExit()
        #expect(!b.process.isRunning)
        if !b.process.isRunning { #expect(b.process.terminationStatus == 0) }
        #expect(!FileManager.default.fileExists(atPath: b.sockets[1]))
    }

    @Test func keepRunningServesEverySocketAgain() throws {
        let b = try launch(sockets: 2, extra: ["--keep-running"], tag: "keep")
        defer { stop(b) }
        for round in 0..<2 {
            for path in b.sockets {
                let (f, d, _p) = try connectGPU(path: path)
                _ = _p
                #expect(try d.createResource2D(id: 1, width: 4, height: 4).type == OK, "round \(round) \(path)")
                f.disconnect()
            }
        }
        usleep(200_000)
        #expect(b.process.isRunning)
        #expect(b.sockets.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        // SIGTERM ends it even though this (multithreaded) test process spawned it with
        // signals blocked: the backend unblocks them, and removes its control socket.
        b.process.terminate()
        b.binary.waitForExit(timeout: 5)
        #expect(!b.process.isRunning)
        #expect(!FileManager.default.fileExists(atPath: b.control))
    }

    @Test func aRepeatedSocketPathIsRefused() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: testBinDir + "/vgpu-backend")
        p.arguments = ["--socket-path", "/tmp/vgpu-dup.sock", "--socket-path", "/tmp/vgpu-dup.sock"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus != 0)
        #expect(text.contains("more than once"), "\(text)")
    }
}

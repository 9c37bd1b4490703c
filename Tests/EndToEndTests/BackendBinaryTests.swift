import CShims
import DisplayChannel
import Foundation
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import SystemSupport

/// The vgpu-backend executable itself: its command line and a session over its socket.
@Suite(.serialized) struct BackendBinaryTests {
    static let binary: String = {
        if let env = ProcessInfo.processInfo.environment["VGPU_BACKEND_UNDER_TEST"] { return env }
        // Built with the tests, next to the test binary (whatever the scratch path).
        return testBinDir + "/vgpu-backend"
    }()

    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runBinary(Self.binary, args)
    }

    @Test(arguments: ["--print-capabilities", "-c"])   // -c: QEMU's vhost-user-gpu short name
    func printsCapabilitiesJSON(flag: String) throws {
        let r = try run([flag])
        #expect(r.status == 0)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        #expect(json["type"] as? String == "gpu")
        #expect(json["features"] is [Any])
    }

    /// libvirt acts on each listed feature at every domain start: `render-node` only where a
    /// render node opens (else libvirt fails even 2D domains without /dev/dri), `virgl` only
    /// where virglrenderer starts (surfaceless llvmpipe here). VGPU_CAPABILITIES_DRI stands in for /dev/dri.
    @Test func capabilitiesListRenderNodeOnlyWhereOneOpens() throws {
        func features(dri: String) throws -> [String] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Self.binary)
            p.arguments = ["--print-capabilities"]
            p.environment = ProcessInfo.processInfo.environment.merging(["VGPU_CAPABILITIES_DRI": dri]) { $1 }
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
            let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            return json["features"] as? [String] ?? []
        }
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-dri-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        #expect(try features(dri: empty.path) == ["virgl"])            // no render node: virgl on llvmpipe
        #expect(try features(dri: "/nonexistent") == ["virgl"])
        // An openable renderD* (a plain file stands in): render-node listed; virgl on it fails.
        FileManager.default.createFile(atPath: empty.appendingPathComponent("renderD128").path, contents: nil)
        #expect(try features(dri: empty.path).contains("render-node"))
    }

    @Test(arguments: [
        [], ["--socket-path", "/tmp/x", "--fd", "3"], ["--fd", "-2"], ["--max-outputs", "0"], ["--max-outputs", "17"],
        ["--virgl", "--socket-path", "/tmp/x", "--socket-path", "/tmp/y"], ["-v", "-r", "/nonexistent/renderD128", "-s", "/tmp/x"],
        ["-r", "/dev/dri/renderD128", "-s", "/tmp/x"], ["--bogus"], ["--fd", "987"],
        ["--socket-path", "/nonexistent-dir/sock"],
    ])
    func badArgumentsGiveOneLineAndNonZeroExit(args: [String]) throws {
        let r = try run(args)
        #expect(r.status != 0)
        let lines = r.err.split(separator: "\n").filter { $0.hasPrefix("Error:") || $0.contains("error") }
        #expect(!lines.isEmpty, "stderr: \(r.err)")
    }

    @Test func servesASessionOverItsSocket() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-e2e-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sock = dir.appendingPathComponent("gpu.sock").path
        let backend = try RunningBinary(Self.binary, ["--socket-path", sock], sockets: [sock])
        defer { backend.stop() }
        let (frontend, driver, peer) = try connectGPU(path: sock)
        let pixels = [UInt8](repeating: 0x42, count: 16 * 16 * 4)
        _ = try driver.makeResource(id: 1, width: 16, height: 16, pixels: pixels)
        #expect(try driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, 16, 16)).type == OK)
        #expect(try driver.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, 16, 16)).type == OK)
        #expect(peer.waitFor(timeout: .seconds(5)) { $0.framebuffers[0]?.pixels.first == 0x42 })
        // Config space: 16 bytes of virtio_gpu_config, num_scanouts from --max-outputs (16).
        let config = try frontend.getConfig(offset: 0, size: 16)
        #expect(config.count == 16)
        #expect(config[8] == 16)
        // QEMU disconnects: the backend exits by itself (like QEMU's C backend).
        frontend.disconnect()
        backend.waitForExit()
        #expect(!backend.isRunning)
    }
}

import CShims
import DisplayChannel
import Foundation
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import SystemSupport

/// `vgpuctl` against a running `vgpu-backend` process, both the binaries built with the tests.
@Suite(.serialized) struct VgpuctlBinaryTests {
    static var binDir: String { testBinDir }

    func vgpuctl(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runBinary(Self.binDir + "/vgpuctl", args)
    }

    /// vgpuctl speaks the control protocol only: linking virglrenderer, epoxy or gbm would put
    /// their closure into every guest initramfs that carries it (issue 10). vgpu-backend, which
    /// does link them, shows that `ldd` sees them (the debug binaries link what release ones do).
    @Test func vgpuctlLinksNoGLLibrary() throws {
        let gl = ["virglrenderer", "epoxy", "gbm"]
        let ctl = try runBinary("/usr/bin/ldd", [Self.binDir + "/vgpuctl"])
        #expect(ctl.status == 0, "\(ctl.err)")
        #expect(ctl.out.contains("libc.so"))
        for lib in gl { #expect(!ctl.out.contains(lib), "vgpuctl links \(lib):\n\(ctl.out)") }
        let backend = try runBinary("/usr/bin/ldd", [Self.binDir + "/vgpu-backend"])
        #expect(backend.out.contains("virglrenderer"))
    }

    @Test func listShowDumpExportAgainstARunningBackend() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpuctl-e2e-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sock = dir.appendingPathComponent("gpu.sock").path
        let ctl = dir.appendingPathComponent("ctl.sock").path
        let backend = try RunningBinary(Self.binDir + "/vgpu-backend", ["--socket-path", sock, "--control-socket", ctl], sockets: [sock, ctl])
        defer { backend.stop() }

        // Before any frontend: no devices.
        let empty = try vgpuctl(["list", "--socket", ctl, "--json"])
        #expect(empty.status == 0)
        #expect((try JSONSerialization.jsonObject(with: Data(empty.out.utf8)) as? [Any])?.isEmpty == true)

        // vgpuctl watch, running through the whole session.
        let watch = Process()
        watch.executableURL = URL(fileURLWithPath: Self.binDir + "/vgpuctl")
        watch.arguments = ["watch", "--socket", ctl]
        let watchOut = Pipe(), watchErr = Pipe()
        watch.standardOutput = watchOut
        watch.standardError = watchErr
        try watch.run()
        defer { if watch.isRunning { watch.terminate() }; watch.waitUntilExit() }
        // Subscribed before the frontend connects: vgpuctl says so on stderr once the server
        // answered the watch (a fixed 300 ms was too short on this loaded machine in one run).
        let subscribed = String(decoding: watchErr.fileHandleForReading.availableData, as: UTF8.self)
        #expect(subscribed == "vgpuctl: watching \(ctl)\n")

        let (frontend, driver, _) = try connectGPU(path: sock)
        var pixels = [UInt8](repeating: 0, count: 8 * 4 * 4)
        for i in stride(from: 0, to: pixels.count, by: 4) { pixels[i] = 0x30; pixels[i + 1] = 0x20; pixels[i + 2] = 0x10 }   // B,G,R
        _ = try driver.makeResource(id: 1, width: 8, height: 4, pixels: pixels)
        let uuidBytes = try #require(try driver.assignUUID(id: 1).resourceUUID)
        let hex = uuidBytes.map { String(format: "%02x", $0) }.joined()
        let uuid = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20)].map(String.init).joined(separator: "-")

        // list --json: the device, the resource, its UUID and memfd host buffer.
        let list = try vgpuctl(["list", "--socket", ctl, "--json"])
        #expect(list.status == 0, "\(list.err)")
        let devices = try #require(try JSONSerialization.jsonObject(with: Data(list.out.utf8)) as? [[String: Any]])
        #expect(devices.count == 1)
        let resources = try #require(devices.first?["resources"] as? [[String: Any]])
        #expect(resources.first?["uuid"] as? String == uuid)
        #expect((resources.first?["hostBuffer"] as? [String: Any])?["kind"] as? String == "memfd")
        // The human table names the same UUID.
        let table = try vgpuctl(["--socket", ctl, "list"])
        #expect(table.status == 0 && table.out.contains(uuid) && table.out.contains("memfd"))
        let show = try vgpuctl(["show", uuid, "--socket", ctl])
        #expect(show.status == 0 && show.out.contains("guest backing") && show.out.contains("0x"))

        // dump: a PNG of the resource.
        let png = dir.appendingPathComponent("r.png").path
        let dump = try vgpuctl(["dump", "1", png, "--socket", ctl])
        #expect(dump.status == 0, "\(dump.err)")
        let bytes = [UInt8]((try? Data(contentsOf: URL(fileURLWithPath: png))) ?? Data())
        #expect(Array(bytes.prefix(4)) == [0x89, 0x50, 0x4E, 0x47])
        // The first pixel's RGB sits after the IHDR (8+25), the IDAT header (8), zlib (2), a stored block header (5) and a filter byte.
        #expect(bytes.count > 49 && Array(bytes[49..<52]) == [0x10, 0x20, 0x30])

        // export --exec: the command gets the fd and the layout.
        let script = #"test "$VGPU_HANDLE_TYPE" = memfd && test "$VGPU_KIND" = memfd && test "$VGPU_COHERENCY" = on-transfer && test "$VGPU_SIZE" = 4096 && test "$VGPU_STRIDE" = 32 && test "$VGPU_FOURCC" = XR24 && test "$VGPU_MODIFIER" = 0 && od -An -tx1 -N4 <&"$VGPU_FD""#
        let exported = try vgpuctl(["export", uuid, "--socket", ctl, "--exec", "sh", "-c", script])
        #expect(exported.status == 0, "\(exported.err)")
        #expect(exported.out.trimmingCharacters(in: .whitespacesAndNewlines) == "30 20 10 00")

        // Errors: one line, non-zero exit.
        for args in [["show", "77", "--socket", ctl], ["export", "not-a-uuid", "--socket", ctl], ["list", "--socket", dir.path + "/none.sock"],
                     ["dump", "1", "--socket", ctl], ["frob"], ["export", "0b7a3f0e-4c1d-4e2a-9f00-123456789abc", "--socket", ctl]] {
            let r = try vgpuctl(args)
            #expect(r.status != 0, "\(args)")
            #expect(!r.err.isEmpty, "\(args)")
            if args.first == "show" || args.contains("0b7a3f0e-4c1d-4e2a-9f00-123456789abc") { #expect(r.err.split(separator: "\n").count == 1, "\(r.err)") }
        }
        #expect(try driver.unref(id: 1).type == OK)
        frontend.disconnect()
        // The watch saw the whole life of the device and its resource, then the backend exited.
        waitUntil(timeout: 10, interval: 0.02) { !watch.isRunning }
        let events = String(decoding: watchOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let kinds = events.split(separator: "\n").compactMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init) }
        #expect(kinds == ["device-connected", "created", "uuid-assigned", "unref", "device-disconnected"], "\(events)")
        #expect(events.contains("uuid \(uuid)"))
    }
}

import CImportWire
import CShims
import ControlProtocol
import ControlServer
import Foundation
import Testing
@testable import VGPUResolve
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The control socket's `resolve`/`release` and holders, through ControlClient (vgpuctl's) and
/// VGPUResolve's ResolveClient, against a real device and server.
@Suite(.serialized) struct ResolveTests {
    func exported(_ rig: GPURig, id: UInt32) throws -> ResourceUUID {
        _ = try rig.makeResource(id: id, width: 8, height: 4, pixels: pixelPattern(8, 4))
        return try #require(try rig.driver.assignUUID(id: id).resourceUUID.flatMap { ResourceUUID(bytes: $0) })
    }

    func holders(_ client: ControlClient, _ uuid: ResourceUUID) throws -> [ResourceHolder] {
        try #require(client.call(.show, resource: uuid.description).0.detail).resource.holders ?? []
    }

    @Test func resolveHoldsUntilReleaseCloseOrUnref() throws {
        let directory = DeviceDirectory()
        let rig = try GPURig(deviceID: 3, directory: directory)
        let server = try ControlServer(path: ControlSocketTests.socketPath("resolve"), directory: directory, logger: GPURig.logger())
        server.start()
        defer { server.stop(); _ = rig.disconnect() }
        let u = try exported(rig, id: 1)
        let observer = try ControlClient(path: server.path)

        // resolve: export's reply and fd, plus a hold named by the holder text and the peer's pid.
        let holder = try ControlClient(path: server.path)
        let (result, fd) = try holder.call(.resolve, resource: u.description, holder: "test holder")
        #expect(result.buffer?.device == 3 && result.buffer?.resource == 1 && result.buffer?.fourcc == "XR24" && fd != nil)
        #expect(try holders(observer, u) == [ResourceHolder(holder: "test holder", pid: getpid(), count: 1)])
        _ = try holder.call(.resolve, resource: u.description, holder: "test holder")
        let listed = try #require(observer.call(.list).0.devices?.first?.resources.first)
        #expect(listed.holders == [ResourceHolder(holder: "test holder", pid: getpid(), count: 2)])
        // vgpuctl's table names the holder and its pid.
        let table = try runBinary(testBinDir + "/vgpuctl", ["list", "--socket", server.path])
        #expect(table.status == 0)
        #expect(table.out.contains("HELD BY") && table.out.contains("test holder (pid \(getpid()), 2 holds)"), "\(table.out)")
        // release undoes one resolve at a time; a release with nothing held answers 0.
        #expect(try holder.call(.release, resource: u.description).0.released == 1)
        #expect(try holders(observer, u).map(\.count) == [1])
        #expect(try holder.call(.release, resource: u.description).0.released == 1)
        #expect(try holders(observer, u).isEmpty)
        #expect(try holder.call(.release, resource: u.description).0.released == 0)
        let after = try runBinary(testBinDir + "/vgpuctl", ["list", "--socket", server.path])
        #expect(!after.out.contains("test holder"), "\(after.out)")

        // A connection that closes drops its holds.
        do {
            let transient = try ControlClient(path: server.path)
            _ = try transient.call(.resolve, resource: u.description, holder: "transient")
            #expect(try holders(observer, u).map(\.holder) == ["transient"])
        }
        let deadline = monotonicSeconds() + 3
        while try !holders(observer, u).isEmpty, monotonicSeconds() < deadline { usleep(5_000) }
        #expect(try holders(observer, u).isEmpty)

        // Unref drops the holds of that resource.
        _ = try holder.call(.resolve, resource: u.description, holder: "test holder")
        #expect(try rig.driver.unref(id: 1).type == OK)
        #expect(throws: ControlClientError.self) { _ = try holder.call(.resolve, resource: u.description, holder: "x") }
        #expect(try holder.call(.release, resource: u.description).0.released == 0)

        // Bad requests: no holder, not a UUID.
        let v = try exported(rig, id: 2)
        #expect(throws: ControlClientError.self) { _ = try holder.call(.resolve, resource: v.description) }
        #expect(throws: ControlClientError.self) { _ = try holder.call(.resolve, resource: "3:2", holder: "x") }
        #expect(throws: ControlClientError.self) { _ = try holder.call(.release, resource: "3:2") }
    }

    @Test func resolveClientSpeaksTheProtocol() throws {
        let directory = DeviceDirectory()
        let rig = try GPURig(deviceID: 5, directory: directory)
        let server = try ControlServer(path: ControlSocketTests.socketPath("rc"), directory: directory, logger: GPURig.logger())
        server.start()
        defer { server.stop(); _ = rig.disconnect() }
        let u = try exported(rig, id: 4)
        let uuid = try #require(ResourceUUID(string: u.description))
        #expect(uuid.bytes == u.bytes && uuid.description == u.description)

        let client = try ResolveClient(path: server.path)
        let watch = try ResolveWatch(path: server.path)
        let b = try client.resolve(uuid: uuid, holder: "resolve-client")
        #expect(b.layout.device == 5 && b.layout.resource == 4 && b.layout.fourcc == 0x3432_5258 && b.layout.width == 8)
        #expect(b.layout.stride == 32 && b.layout.handleType == "memfd" && b.layout.kind == "memfd" && b.layout.coherency == "on-transfer")
        #expect(try client.show(uuid: uuid)?.resource == 4)
        #expect(try client.exists(uuid: uuid))
        #expect(try client.show(uuid: ResourceUUID(bytes: [UInt8](repeating: 1, count: 16))!) == nil)
        #expect(try client.release(uuid: uuid) == 1)
        #expect(try rig.driver.unref(id: 4).type == OK)
        #expect(try !client.exists(uuid: uuid))
        #expect(throws: ResolveError.self) { _ = try client.resolve(uuid: uuid, holder: "x") }
        // The watch saw the unref, with the UUID.
        var seen: [ResolveEvent] = []
        let deadline = monotonicSeconds() + 3
        while !seen.contains(where: { $0.kind == "unref" }), monotonicSeconds() < deadline {
            var p = pollfd(fd: watch.fileDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 100)
            seen += try watch.events()
        }
        #expect(seen.contains { $0.kind == "unref" && $0.uuid == uuid && $0.device == 5 && $0.resource == 4 })
    }

    @Test func resolveClientErrorsAreOneClearLine() throws {
        let missing = ControlSocketTests.socketPath("missing")
        #expect(throws: ResolveError.noSocket(path: missing)) { _ = try ResolveClient(path: missing) }
        // A socket file nobody listens on (a backend that died without unlinking).
        let stale = ControlSocketTests.socketPath("stale")
        do { _ = try UnixSocket.listen(path: stale) }
        defer { unlink(stale) }
        #expect(throws: ResolveError.refused(path: stale)) { _ = try ResolveClient(path: stale) }
        // A server that does not serve this user.
        let directory = DeviceDirectory()
        let server = try ControlServer(path: ControlSocketTests.socketPath("denied"), directory: directory, logger: GPURig.logger(),
                                       authorize: { _ in false })
        server.start()
        defer { server.stop() }
        let client = try ResolveClient(path: server.path)
        do { try client.ping(); Issue.record("a refused peer was served") } catch {
            guard case .permissionDenied = error else { Issue.record("\(error)"); return }
            #expect(!error.description.contains("\n"))
        }
        for e in [ResolveError.noSocket(path: missing), .refused(path: stale)] { #expect(!e.description.contains("\n")) }
    }

    /// ResolveClient runs on ControlProtocol's ControlClient: each of its errors means what the
    /// importers' own connection used to say (connect errno, server code, broken connection).
    @Test func controlClientErrorsMapToResolveErrors() {
        let p = "/run/vgpu/1.sock"
        #expect(ResolveError(.noSocket("m"), path: p) == .noSocket(path: p))
        #expect(ResolveError(.connect("m", errno: ENOENT), path: p) == .noSocket(path: p))
        #expect(ResolveError(.connect("m", errno: ECONNREFUSED), path: p) == .refused(path: p))
        #expect(ResolveError(.connect("m", errno: EACCES), path: p) == .permissionDenied(path: p, message: "no access to the socket file"))
        #expect(ResolveError(.connect("m", errno: EMFILE), path: p) == .connect(path: p, errno: EMFILE))
        #expect(ResolveError(.server(ControlError(.notFound, "gone")), path: p) == .notFound("gone"))
        #expect(ResolveError(.server(ControlError(.permissionDenied, "no")), path: p) == .permissionDenied(path: p, message: "no"))
        #expect(ResolveError(.server(ControlError(.busy, "full")), path: p) == .server(code: "busy", message: "full"))
        #expect(ResolveError(.protocolError("connection closed"), path: p) == .connectionLost(path: p, why: "connection closed"))
    }
}

/// The vgpu-import-device executable: its command line, its libraries, and a session.
@Suite(.serialized) struct ImportBinaryTests {
    static let binary = testBinDir + "/vgpu-import-device"

    @Test(arguments: [
        [], ["--bogus"], ["--socket-path", "/tmp/x", "--fd", "3"], ["--fd", "-1"], ["--max-handles", "0", "--socket-path", "/tmp/x"],
        ["--shared-object-lookup", "maybe", "--socket-path", "/tmp/x"], ["--fd", "987"],
        ["--socket-path", "/tmp/x", "--shared-object-lookup", "off"],
        ["--socket-path", "/tmp/x", "--shared-object-lookup", "off", "--control-socket", "/nonexistent/ctl.sock"],
        ["--socket-path", "/nonexistent-dir/imp.sock", "--control-socket", "/tmp/none.sock"],
    ])
    func badArgumentsGiveOneLineAndNonZeroExit(args: [String]) throws {
        let r = try runBinary(Self.binary, args)
        #expect(r.status != 0)
        #expect(r.err.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count == 1, "stderr: \(r.err)")
    }

    @Test func printsCapabilities() throws {
        let r = try runBinary(Self.binary, ["--print-capabilities"])
        #expect(r.status == 0 && r.out.contains(#""type": "i2c""#))
    }

    @Test func linksNeitherVirglNorGL() throws {
        let r = try runBinary("/usr/bin/ldd", [Self.binary])
        #expect(r.status == 0)
        for lib in ["virglrenderer", "epoxy", "gbm"] { #expect(!r.out.contains(lib), "\(lib) in \(r.out)") }
    }

    @Test func servesImportsOverItsSocket() throws {
        let directory = DeviceDirectory()
        let rig = try GPURig(deviceID: 2, directory: directory)
        let server = try ControlServer(path: ControlSocketTests.socketPath("bin"), directory: directory, logger: GPURig.logger())
        server.start()
        defer { server.stop(); _ = rig.disconnect() }
        let pixels = pixelPattern(17, 9, seed: 4)
        _ = try rig.makeResource(id: 6, width: 17, height: 9, pixels: pixels)
        let uuid = try #require(try rig.driver.assignUUID(id: 6).resourceUUID)

        let sock = NSTemporaryDirectory() + "vgpu-imp-bin-\(getpid()).sock"
        let missing = NSTemporaryDirectory() + "vgpu-imp-missing-\(getpid()).sock"
        let err = Pipe()
        // A missing first socket: one warning, then the second answers.
        let p = try RunningBinary(Self.binary, ["--socket-path", sock, "--control-socket", missing, "--control-socket", server.path, "--max-handles", "8"],
                                  sockets: [sock], standardError: err)
        defer { p.stop() }
        let driver = try ImportDriver(frontend: VhostUserFrontend(path: sock))
        let id = try driver.identify()
        #expect(id.name == "vgpu-import-device" && UInt32(littleEndian: id.response.max_handles) == 8)
        let r = try driver.importUUID(uuid)
        #expect(r.status == 0 && r.digest == referenceDigest(pixels, rowBytes: 68, stride: 68, rows: 9))
        let holders = try ControlClient(path: server.path).call(.list).0.devices?.first?.resources.first?.holders ?? []
        #expect(holders.count == 1 && (holders.first?.holder == "vgpu-import-device") == true && holders.first?.pid == p.pid)
        #expect(try driver.importUUID([UInt8](repeating: 9, count: 16)).status == UInt16(VGPU_IMPORT_STATUS_NOT_FOUND))
        // QEMU leaves: the process exits, and its holds go with its connection.
        driver.frontend.disconnect()
        p.waitForExit()
        #expect(!p.isRunning)
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(log.split(separator: "\n").filter { $0.contains(missing) }.count == 1, "\(log)")
        let after = try ControlClient(path: server.path).call(.list).0.devices?.first?.resources.first?.holders ?? []
        #expect(after.isEmpty)
    }
}

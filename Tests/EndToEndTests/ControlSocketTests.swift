import CShims
import ControlProtocol
import ControlServer
import Foundation
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore
import VirtioGPU
import SystemSupport

/// The control socket against real devices: a GPURig device registered in a directory, a
/// ControlServer on a real socket, and the ControlClient that vgpuctl uses.
@Suite(.serialized) struct ControlSocketTests {
    static func socketPath(_ name: String) -> String {
        NSTemporaryDirectory() + "vgpu-ctl-\(getpid())-\(name).sock"
    }

    func uuid(_ r: VirtioGPUDriver.Response) -> ResourceUUID? {
        r.resourceUUID.flatMap { ResourceUUID(bytes: $0) }
    }

    /// A device and a server; the server is stopped and the rig disconnected at the end.
    func withControl(_ name: String, partialLineTimeout: Double = 10, authorize: (@Sendable (PeerCredentials) -> Bool)? = nil,
                     _ body: (GPURig, ControlServer, DeviceDirectory) throws -> Void) throws {
        let directory = DeviceDirectory()
        let rig = try GPURig(deviceID: 3, directory: directory)
        let path = Self.socketPath(name)
        let server = authorize.map { try? ControlServer(path: path, directory: directory, logger: GPURig.logger(), partialLineTimeout: partialLineTimeout, authorize: $0) }
            ?? (try? ControlServer(path: path, directory: directory, logger: GPURig.logger(), partialLineTimeout: partialLineTimeout))
        let s = try #require(server)
        s.start()
        defer {
            s.stop()
            _ = rig.disconnect()
        }
        try body(rig, s, directory)
    }

    @Test func listShowAndExportShowTheGuestsPixels() throws {
        try withControl("export") { rig, server, directory in
            let w: UInt32 = 32, h: UInt32 = 16
            let pixels = pixelPattern(Int(w), Int(h), seed: 9)
            _ = try rig.makeResource(id: 5, width: w, height: h, pixels: pixels)
            try rig.check(rig.driver.setScanout(0, id: 5, rect: VirtioGPUDriver.rect(0, 0, w, h)), "scanout")
            let u = try #require(uuid(try rig.driver.assignUUID(id: 5)))
            #expect(try rig.driver.createResource2D(id: 6, width: 8, height: 8).type == OK)

            let client = try ControlClient(path: server.path)
            let devices = try #require(client.call(.list).0.devices)
            #expect(devices.map(\.id) == [3])
            #expect(devices[0].label == "rig 3")
            let rows = devices[0].resources
            #expect(rows.map(\.id) == [5, 6])
            let r = rows[0]
            #expect(r.uuid == u.description)
            #expect(r.width == w && r.height == h && r.stride == Int(w) * 4)
            #expect(r.format == "B8G8R8X8" && r.fourcc == "XR24")
            // Exported at ASSIGN_UUID; with memfd only, the host copy itself, coherent on transfer.
            #expect(r.hostBuffer == HostBufferSummary(kind: "memfd", size: (Int(w * h * 4) + 4095) / 4096 * 4096, exported: true))
            #expect(rows[1].hostBuffer.exported == false)
            #expect(r.backingEntries == 1 && r.backingBytes == UInt64(pixels.count))
            #expect(r.scanouts == [0])
            #expect(r.ageSeconds >= 0 && r.ageSeconds < 60)
            #expect(rows[1].uuid == nil && rows[1].backingEntries == 0)

            // show, three ways of naming it; backing as guest ranges in their own section.
            for name in ["3:5", "5", u.description, u.description.uppercased()] {
                let d = try #require(client.call(.show, resource: name).0.detail)
                // The same row as list's, age apart (it only grows between the two calls).
                var shown = d.resource, listed = r
                #expect(shown.ageSeconds >= listed.ageSeconds)
                shown.ageSeconds = 0; listed.ageSeconds = 0
                #expect(shown == listed)
                #expect(d.guestBacking.count == 1)
                #expect(d.guestBacking.first?.length == UInt32(pixels.count))
                #expect(d.guestBacking.first?.guestPhysicalAddress.hasPrefix("0x") == true)
            }

            // export by UUID: a read-only memfd whose mapping holds the guest's pixels.
            let (result, fdOrNil) = try client.call(.export, resource: u.description)
            let layout = try #require(result.buffer)
            let fd = try #require(fdOrNil)
            #expect(layout.handleType == "memfd" && layout.fourcc == "XR24" && layout.drmFormat == 0x3432_5258)
            #expect(layout.stride == Int(w) * 4 && layout.offset == 0 && layout.modifier == 0)
            #expect(layout.uuid == u.description && layout.device == 3 && layout.resource == 5)
            #expect(fcntl(fd.rawValue, F_GETFL) & O_ACCMODE == O_RDONLY)
            let p = try #require(mmap(nil, layout.size, PROT_READ, MAP_SHARED, fd.rawValue, 0))
            #expect(p != MAP_FAILED)
            defer { munmap(p, layout.size) }
            #expect(layout.size == (pixels.count + 4095) / 4096 * 4096)   // whole pages
            #expect(layout.handleType == "memfd" && layout.kind == "memfd" && layout.coherency == "on-transfer")
            #expect(Array(UnsafeRawBufferPointer(start: p, count: pixels.count)) == pixels)
            // Writable mapping refused: the consumer cannot change the backend's copy.
            let wp = mmap(nil, layout.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, 0)
            #expect(wp == MAP_FAILED)
            // A later transfer shows through the same mapping (shared memfd pages).
            let newer = pixelPattern(Int(w), Int(h), seed: 77)
            let backing = rig.place(newer)
            #expect(try rig.driver.detachBacking(id: 5).type == OK)
            #expect(try rig.driver.attachBacking(id: 5, entries: [(backing, UInt32(newer.count))]).type == OK)
            #expect(try rig.driver.transferToHost2D(id: 5, rect: VirtioGPUDriver.rect(0, 0, w, h)).type == OK)
            #expect(Array(UnsafeRawBufferPointer(start: p, count: newer.count)) == newer)

            // dump works by id and gives the same kind of fd.
            let (dumped, dumpFD) = try client.call(.dump, resource: "3:6")
            #expect(dumped.buffer?.size == 4096 && dumpFD != nil)

            // Unref: the UUID is gone at once; the fd already handed out stays valid.
            #expect(try rig.driver.unref(id: 5).type == OK)
            #expect(throws: ControlClientError.server(ControlError(.notFound, "no resource has UUID \(u) (never assigned, or unreferenced)"))) {
                _ = try client.call(.export, resource: u.description)
            }
            #expect(Array(UnsafeRawBufferPointer(start: p, count: newer.count)) == newer)
            _ = directory
        }
    }

    /// Requests sent in one write are answered in order, and the replies without an fd go out
    /// together; an fd still travels with its own reply line. Linux ends a stream receive after
    /// the data an fd came with (and may start it with earlier data), so the receive that
    /// brings an fd ends exactly at the end of that fd's line (measured here).
    @Test func pipelinedRequestsKeepOrderAndFDsStayWithTheirLines() throws {
        try withControl("pipeline") { rig, server, _ in
            _ = try rig.makeResource(id: 5, width: 8, height: 8, pixels: pixelPattern(8, 8, seed: 3))
            #expect(try rig.driver.createResource2D(id: 6, width: 4, height: 4).type == OK)
            let socket = try UnixSocket.connect(path: server.path)
            let methods = ["list", "dump", "frob", "show", "dump", "list"]
            var text = ""
            for (i, m) in methods.enumerated() {
                text += #"{"version":1,"id":\#(i + 1),"method":"\#(m)","resource":"3:\#(i == 4 ? 6 : 5)"}"# + "\n"
            }
            try UnixSocket.send(socket.rawValue, [Array(text.utf8)])
            var stream: [UInt8] = [], fdReceiveEnds: [Int] = []
            var fds: [OwnedFileDescriptor] = []
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
            defer { buffer.deallocate() }
            let deadline = monotonicSeconds() + 10
            while stream.filter({ $0 == UInt8(ascii: "\n") }).count < methods.count, monotonicSeconds() < deadline {
                try Poll.waitReadable(socket.rawValue, until: deadline, wake: nil)
                let got = try UnixSocket.receiveSome(socket.rawValue, into: buffer)
                if got.count == 0 { break }
                fds += got.fds
                stream += buffer[0..<got.count]
                if !got.fds.isEmpty { fdReceiveEnds.append(stream.count) }
            }
            let lines = stream.split(separator: UInt8(ascii: "\n"))
            let replies = try lines.map { try ControlCodec.decodeResponse($0) }
            #expect(replies.map(\.id) == [1, 2, 3, 4, 5, 6])
            #expect(replies.map(\.ok) == [true, true, false, true, true, true])
            #expect(replies[2].error?.code == .unknownMethod)
            #expect(replies[1].result?.buffer?.resource == 5 && replies[4].result?.buffer?.resource == 6)
            var ends: [Int] = [], offset = 0
            for l in lines { offset += l.count + 1; ends.append(offset) }
            #expect(fds.count == 2)
            #expect(fdReceiveEnds == [ends[1], ends[4]])
        }
    }

    @Test func unknownIDsAndBadReferencesGetClearErrors() throws {
        try withControl("errors") { rig, server, _ in
            #expect(try rig.driver.createResource2D(id: 1, width: 4, height: 4).type == OK)
            let client = try ControlClient(path: server.path)
            func code(_ m: ControlMethod, _ r: String?) -> ControlErrorCode? {
                do { _ = try client.call(m, resource: r); return nil } catch {
                    if case let .server(e) = error { return e.code }
                    return .internalError
                }
            }
            #expect(code(.show, "2") == .notFound)
            #expect(code(.show, "9:1") == .notFound)
            #expect(code(.show, "3:99") == .notFound)
            #expect(code(.show, nil) == .badRequest)
            #expect(code(.show, "x:y:z") == .badRequest)
            #expect(code(.export, "1") == .badRequest)          // export is by UUID only
            #expect(code(.export, ResourceUUID.random().description) == .notFound)
            #expect(code(.dump, "3:1") == nil)
            // The connection is still fine after all of that.
            #expect(try client.call(.list).0.devices?.first?.resources.count == 1)
        }
    }

    @Test func garbageOversizedAndHalfRequestsDisturbNothing() throws {
        try withControl("garbage") { rig, server, _ in
            #expect(try rig.driver.createResource2D(id: 1, width: 4, height: 4).type == OK)
            let good = try ControlClient(path: server.path)
            // Garbage gets an error line; the same connection then works.
            let garbage = try ControlClient(path: server.path)
            try garbage.sendRaw(Array("}{ not json\n".utf8))
            #expect(try garbage.readResponse(timeout: 5).error?.code == .badRequest)
            try garbage.sendRaw([0xFF, 0xFE, 0x00, 0x0A])
            #expect(try garbage.readResponse(timeout: 5).error?.code == .badRequest)
            #expect(try garbage.call(.list).0.devices?.count == 1)
            // Oversized: an error line, then the server closes the connection.
            let big = try ControlClient(path: server.path)
            try big.sendRaw([UInt8](repeating: UInt8(ascii: "a"), count: ControlProtocol.maxLineBytes + 4096))
            #expect(try big.readResponse(timeout: 5).error?.code == .requestTooLarge)
            #expect(throws: ControlClientError.protocolError("connection closed")) { _ = try big.readResponse(timeout: 5) }
            // A client that leaves mid-request.
            do {
                let half = try ControlClient(path: server.path)
                try half.sendRaw(Array(#"{"version":1,"id":1,"meth"#.utf8))
            }
            // The device and the other client are undisturbed.
            #expect(try rig.driver.createResource2D(id: 2, width: 4, height: 4).type == OK)
            #expect(try good.call(.list).0.devices?.first?.resources.map(\.id) == [1, 2])
        }
    }

    @Test func clientStalledMidRequestIsDropped() throws {
        try withControl("stall", partialLineTimeout: 0.3) { _, server, _ in
            let stalled = try ControlClient(path: server.path)
            try stalled.sendRaw(Array(#"{"version":1,"id":1,"#.utf8))
            let start = monotonicSeconds()
            #expect(throws: ControlClientError.protocolError("connection closed")) { _ = try stalled.readResponse(timeout: 5) }
            #expect(monotonicSeconds() - start < 4)
            // An idle client (nothing pending) is not dropped, and others are served.
            let idle = try ControlClient(path: server.path)
            usleep(700_000)
            #expect(try idle.call(.list).0.devices?.count == 1)
        }
    }

    @Test func refusedPeerGetsPermissionDenied() throws {
        try withControl("refused", authorize: { _ in false }) { _, server, _ in
            let client = try ControlClient(path: server.path)
            do {
                _ = try client.call(.list)
                Issue.record("a refused peer was served")
            } catch let error as ControlClientError {
                guard case let .server(e) = error else { Issue.record("\(error)"); return }
                #expect(e.code == .permissionDenied)
                #expect(e.message.contains("uid \(getuid())"))
            }
        }
    }

    @Test func socketFileIsPrivate() throws {
        try withControl("mode") { _, server, _ in
            var st = stat()
            #expect(stat(server.path, &st) == 0)
            #expect(st.st_mode & 0o777 == 0o600)
        }
        #expect(access(Self.socketPath("mode"), F_OK) != 0)   // removed on stop
    }

    @Test func watchReceivesLifecycleEvents() throws {
        try withControl("watch") { rig, server, directory in
            let watcher = try ControlClient(path: server.path)
            #expect(try watcher.call(.watch).0.watching == true)
            #expect(try rig.driver.createResource2D(id: 4, width: 4, height: 4).type == OK)
            let u = try #require(uuid(try rig.driver.assignUUID(id: 4)))
            _ = try rig.driver.assignUUID(id: 4)   // again: same UUID, no second event
            #expect(try rig.driver.unref(id: 4).type == OK)
            // A second device connecting, making a resource and leaving with it.
            let other = try GPURig(deviceID: 8, directory: directory)
            #expect(try other.driver.createResource2D(id: 1, width: 4, height: 4).type == OK)
            #expect(other.disconnect())
            var got: [EventRecord] = []
            while got.count < 7, let e = try watcher.nextEvent() { got.append(e) }
            #expect(got.map(\.kind) == ["created", "uuid-assigned", "unref", "device-connected", "created", "device-reset", "device-disconnected"])
            #expect(got[0].device == 3 && got[0].resource == 4 && got[0].uuid == nil)
            #expect(got[1].uuid == u.description && got[2].uuid == u.description)
            #expect(got[3...].allSatisfy { $0.device == 8 })
            // Requests still work on the watching connection; event lines in between are skipped.
            #expect(try rig.driver.createResource2D(id: 5, width: 4, height: 4).type == OK)
            usleep(100_000)
            #expect(try watcher.call(.list).0.devices?.first?.resources.map(\.id) == [5])
            #expect(got.allSatisfy { $0.dropped == nil })
        }
    }

    @Test func eventQueueIsBoundedAndCountsDrops() throws {
        let hub = ResourceEventHub()
        #expect(!hub.hasSubscribers)
        let sub = try hub.subscribe(capacity: 3)
        #expect(hub.hasSubscribers)
        for i in 1...10 as ClosedRange<UInt32> { hub.publish(ResourceEvent(kind: .created, device: GPUDeviceID(1), resource: ResourceID(i))) }
        let (events, dropped) = sub.take()
        #expect(events.map { $0.resource?.raw } == [1, 2, 3])
        #expect(dropped == 7)
        #expect(sub.take().events.isEmpty)
        sub.cancel()
        #expect(!hub.hasSubscribers)
    }

    @Test func twoThousandExportsLeaveTheFDCountAlone() throws {
        try withControl("leak") { rig, server, _ in
            _ = try rig.makeResource(id: 1, width: 16, height: 16, pixels: pixelPattern(16, 16))
            let u = try #require(uuid(try rig.driver.assignUUID(id: 1)))
            let client = try ControlClient(path: server.path)
            _ = try client.call(.export, resource: u.description)   // warm up
            let before = openFDSet()
            for _ in 0..<2000 {
                let (_, fd) = try client.call(.export, resource: u.description)
                #expect(fd != nil)
            }
            #expect(fdsLeaked(since: before).isEmpty)
        }
    }
}

extension ControlSocketTests {
    /// The issue's 10,000-cycle soak, through the control socket: create, assign, export (the fd
    /// mapped and closed), unref; fds and memory end where they started.
    @Test func createAssignExportUnrefCyclesLeakNothing() throws {
        try withControl("cycles") { rig, server, _ in
            let client = try ControlClient(path: server.path)
            func cycle(_ i: Int) throws {
                let id = UInt32(1 + i % 7)
                #expect(try rig.driver.createResource2D(id: id, width: 16, height: 16).type == OK)
                let u = try #require(uuid(try rig.driver.assignUUID(id: id)))
                let (result, fd) = try client.call(.export, resource: u.description)
                let size = try #require(result.buffer?.size)
                let fdValue = try #require(fd).rawValue
                let p = mmap(nil, size, PROT_READ, MAP_SHARED, fdValue, 0)
                #expect(p != MAP_FAILED)
                if let p, p != MAP_FAILED { munmap(p, size) }
                #expect(try rig.driver.unref(id: id).type == OK)
                #expect(rig.registry.lookup(u) == nil)
            }
            for i in 0..<200 { try cycle(i) }   // warm up allocators and caches
            let fdsBefore = openFDSet()
            let rssBefore = residentKiB()
            #expect(rssBefore > 0)
            for i in 0..<10_000 { try cycle(i) }
            #expect(fdsLeaked(since: fdsBefore).isEmpty)
            if !underSanitizer {
                #expect(residentKiB() - rssBefore < 8 * 1024, "RSS grew from \(rssBefore) KiB to \(residentKiB()) KiB")
            }
            #expect(try client.call(.list).0.devices?.first?.resources.isEmpty == true)
        }
    }
}

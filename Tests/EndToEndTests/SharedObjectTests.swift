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
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The frontend's end of the backend channel: records every request the backend sends and,
/// when `ack`, answers NEED_REPLY with a u64 0 the way QEMU's main loop does.
final class BackendChannelPeer: @unchecked Sendable {
    let fd: OwnedFileDescriptor
    private let lock = NSLock()
    private var received: [VhostUserMessage] = []
    private let ended = DispatchSemaphore(value: 0)

    /// `lookup` answers SHARED_OBJECT_LOOKUP the way QEMU 10 does: u64 0, with the fd it
    /// returns (borrowed) when it knows the UUID, without one otherwise.
    init(fd: OwnedFileDescriptor, ack: Bool, lookup: (@Sendable ([UInt8]) -> Int32?)? = nil) {
        self.fd = fd
        startThread(name: "backend-peer") { [self] in
            while let m = try? VhostUserMessage.read(from: fd.rawValue) {
                lock.withLock { received.append(m) }
                if m.header.request == VhostUserBackendRequest.sharedObjectLookup.rawValue, let lookup {
                    let found = lookup(m.payload)
                    try? VhostUserMessage.write(to: fd.rawValue, request: m.header.request,
                                                flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply,
                                                payload: ByteWriter().u64(0).bytes, fds: found.map { [$0] } ?? [])
                } else if ack, m.header.needsReply {
                    try? VhostUserMessage.write(to: fd.rawValue, request: m.header.request,
                                                flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply, payload: ByteWriter().u64(0).bytes)
                }
            }
            ended.signal()
        }
    }

    var messages: [VhostUserMessage] { lock.withLock { received } }

    /// Waits until `count` requests arrived.
    func wait(for count: Int, timeout: Double = 2) -> [VhostUserMessage] {
        let deadline = Date().addingTimeInterval(timeout)
        while messages.count < count && Date() < deadline { usleep(5_000) }
        return messages
    }

    /// Waits until the backend closed its end.
    func waitForEOF(timeout: Double = 5) -> Bool { ended.wait(timeout: .now() + timeout) == .success }
}

@Suite(.serialized) struct SharedObjectTests {
    /// A rig whose frontend negotiated SHARED_OBJECT and gave the backend its channel.
    func sharedRig(ack: Bool = true, ackTimeout: Double = 1.0, directory: DeviceDirectory? = nil, lookup: Bool = false,
                   answer: (@Sendable ([UInt8]) -> Int32?)? = nil) throws -> (GPURig, BackendChannelPeer) {
        let rig = try GPURig(directory: directory, backendAckTimeout: ackTimeout, sharedObjectLookup: lookup)
        let f = rig.driver.frontend
        try f.setProtocolFeatures(f.protocolFeatures.union([.backendReq, .sharedObject]))
        let (mine, theirs) = try UnixSocket.pair()
        #expect(try f.setBackendReqFD(theirs.rawValue))
        _ = theirs   // our copy closes when this returns; the backend has its own dup
        return (rig, BackendChannelPeer(fd: mine, ack: ack, lookup: answer))
    }

    @Test func protocolFeaturesAreOffered() throws {
        let rig = try GPURig()
        let offered = try rig.driver.frontend.getProtocolFeatures()
        #expect(offered.contains(.sharedObject))
        #expect(offered.contains(.backendReq))
        #expect(offered.contains(.replyAck))
        #expect(rig.disconnect())
    }

    @Test func assignPublishesAddOnceAndUnrefRemoves() throws {
        let before = openFDSet()
        do {
            let (rig, peer) = try sharedRig()
            _ = try rig.makeResource(id: 1, width: 8, height: 4, pixels: pixelPattern(8, 4))
            let u = try #require((try rig.driver.assignUUID(id: 1)).resourceUUID)
            // The ack is awaited before the guest gets its answer: the ADD is already here.
            let first = peer.messages
            try #require(first.count == 1)
            #expect(first[0].header.request == VhostUserBackendRequest.sharedObjectAdd.rawValue)
            #expect(first[0].header.needsReply)
            #expect(first[0].payload == u)
            // A second ASSIGN_UUID: same UUID, nothing new on the channel.
            #expect((try rig.driver.assignUUID(id: 1)).resourceUUID == u)
            #expect(peer.messages.count == 1)
            // UNREF: REMOVE with the same UUID.
            #expect(try rig.driver.unref(id: 1).type == OK)
            let after = peer.messages
            try #require(after.count == 2)
            #expect(after[1].header.request == VhostUserBackendRequest.sharedObjectRemove.rawValue)
            #expect(after[1].payload == u)
            // A UUID still published at disconnect is removed then (no ack asked: nobody serves it).
            _ = try rig.makeResource(id: 2, width: 4, height: 4, pixels: pixelPattern(4, 4))
            let u2 = try #require((try rig.driver.assignUUID(id: 2)).resourceUUID)
            #expect(rig.disconnect())
            #expect(peer.waitForEOF())
            let last = peer.messages
            try #require(last.count == 4)
            #expect(last[2].header.request == VhostUserBackendRequest.sharedObjectAdd.rawValue && last[2].payload == u2)
            #expect(last[3].header.request == VhostUserBackendRequest.sharedObjectRemove.rawValue && last[3].payload == u2)
            #expect(!last[3].header.needsReply)
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }

    @Test func getSharedObjectHandsOutTheHostBuffer() throws {
        let before = openFDSet()
        do {
            let (rig, peer) = try sharedRig()
            let pixels = pixelPattern(16, 8, seed: 3)
            _ = try rig.makeResource(id: 5, width: 16, height: 8, pixels: pixels)
            let u = try #require((try rig.driver.assignUUID(id: 5)).resourceUUID)
            let reply = try rig.driver.frontend.getSharedObject(uuid: u)
            #expect(reply.payload == u)
            let fd = try #require(reply.fd)
            let p = try #require(mmap(nil, pixels.count, PROT_READ, MAP_SHARED, fd.rawValue, 0))
            try #require(p != MAP_FAILED)
            #expect(Array(UnsafeRawBufferPointer(start: p, count: pixels.count)) == pixels)
            munmap(p, pixels.count)
            // Read-only: the receiver cannot write the backend's copy.
            #expect(fcntl(fd.rawValue, F_GETFL) & O_ACCMODE == O_RDONLY)
            // Unknown UUID: no fd.
            let unknown = try rig.driver.frontend.getSharedObject(uuid: [UInt8](repeating: 0xab, count: 16))
            #expect(unknown.fd == nil)
            // After UNREF the UUID is unknown too.
            #expect(try rig.driver.unref(id: 5).type == OK)
            #expect(try rig.driver.frontend.getSharedObject(uuid: u).fd == nil)
            #expect(rig.disconnect())
            #expect(peer.waitForEOF())
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }

    @Test func frontendThatNeverAcksDoesNotWedgeTheDevice() throws {
        let (rig, peer) = try sharedRig(ack: false, ackTimeout: 0.3)
        _ = try rig.makeResource(id: 1, width: 4, height: 4, pixels: pixelPattern(4, 4))
        let start = Date()
        #expect((try rig.driver.assignUUID(id: 1)).resourceUUID != nil)   // after the bounded wait
        #expect(try rig.driver.createResource2D(id: 2, width: 4, height: 4).type == OK)
        #expect((try rig.driver.assignUUID(id: 2)).resourceUUID != nil)   // channel given up: no second wait
        #expect(Date().timeIntervalSince(start) < 1.5)
        #expect(peer.wait(for: 1).count == 1)
        #expect(try rig.driver.unref(id: 2).type == OK)
        #expect(rig.disconnect())
    }

    @Test func badSetBackendReqFDIsRefused() throws {
        let rig = try GPURig()
        let f = rig.driver.frontend
        // Without BACKEND_REQ negotiated.
        let (a, b) = try UnixSocket.pair()
        #expect(try !f.setBackendReqFD(b.rawValue))
        try f.setProtocolFeatures(f.protocolFeatures.union([.backendReq, .sharedObject]))
        // No fd, two fds.
        #expect(try !f.request(.setBackendReqFD))
        #expect(try !f.request(.setBackendReqFD, fds: [a.rawValue, b.rawValue]))
        // The connection goes on: a good one is accepted, and a repeat replaces it.
        #expect(try f.setBackendReqFD(b.rawValue))
        let (c, d) = try UnixSocket.pair()
        #expect(try f.setBackendReqFD(d.rawValue))
        _ = (a, c)
        #expect(rig.disconnect())
    }
}

extension SharedObjectTests {
    /// A UUID no device here owns: `vgpuctl export` asks the frontend (SHARED_OBJECT_LOOKUP) and
    /// hands out the fd it answers with; unknown UUIDs stay not-found; without
    /// --shared-object-lookup nothing is asked.
    @Test func exportOfAForeignUUIDIsLookedUp() throws {
        let foreign = ResourceUUID.random()
        let memfd = vgpu_memfd_create("foreign-object", UInt32(MFD_CLOEXEC))
        #expect(memfd >= 0)
        defer { close(memfd) }
        #expect(ftruncate(memfd, 8192) == 0)
        #expect(pwrite(memfd, [UInt8]([0xC0, 0xFF, 0xEE]), 3, 100) == 3)
        let known = foreign.bytes
        for enabled in [true, false] {
            let directory = DeviceDirectory()
            let (rig, peer) = try sharedRig(directory: directory, lookup: enabled, answer: { $0 == known ? memfd : nil })
            let path = ControlSocketTests.socketPath("lookup-\(enabled)")
            let server = try ControlServer(path: path, directory: directory, logger: GPURig.logger())
            server.start()
            defer { server.stop(); _ = rig.disconnect() }
            let client = try ControlClient(path: path)
            if enabled {
                let (result, fd) = try client.call(.export, resource: foreign.description)
                let b = try #require(result.buffer)
                #expect(b.foreign == true && b.handleType == "memfd" && b.size == 8192 && b.uuid == foreign.description)
                var got = [UInt8](repeating: 0, count: 3)
                #expect(pread(try #require(fd).rawValue, &got, 3, 100) == 3)
                #expect(got == [0xC0, 0xFF, 0xEE])
                #expect(peer.messages.contains { $0.header.request == VhostUserBackendRequest.sharedObjectLookup.rawValue && $0.payload == known })
            }
            // A UUID nobody knows: asked (when enabled), answered without an fd: not-found.
            do {
                _ = try client.call(.export, resource: ResourceUUID.random().description)
                Issue.record("an unknown UUID was exported")
            } catch let ControlClientError.server(e) {
                #expect(e.code == .notFound, "\(e)")
            } catch {
                Issue.record("not a not-found answer: \(error)")
            }
            let lookups = peer.messages.filter { $0.header.request == VhostUserBackendRequest.sharedObjectLookup.rawValue }.count
            #expect(lookups == (enabled ? 2 : 0))
            // The device goes on: its own UUIDs are never looked up.
            _ = try rig.makeResource(id: 1, width: 8, height: 8, pixels: [UInt8](repeating: 1, count: 256))
            let mine = try #require((try rig.driver.assignUUID(id: 1)).resourceUUID)
            let (own, ownFD) = try client.call(.export, resource: ResourceUUID(bytes: mine)!.description)
            #expect(own.buffer?.foreign == nil && ownFD != nil)
            #expect(peer.messages.filter { $0.header.request == VhostUserBackendRequest.sharedObjectLookup.rawValue }.count == lookups)
        }
    }
}

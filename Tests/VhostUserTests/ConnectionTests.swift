import Foundation
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore

/// The server over a real socketpair, driven by the Swift frontend with memfd RAM and eventfds.
@Suite(.serialized) struct ConnectionTests {
    func startedEcho() throws -> StartedDevice<EchoDevice> { try StartedDevice(EchoDevice()) }

    @Test func featuresOfferTransportAndProtocolBits() throws {
        let served = try ServedDevice(EchoDevice())
        let f = VhostUserFrontend(socket: served.frontendSocket)
        let features = try f.getFeatures()
        #expect(features & VirtioFeature.protocolFeatures != 0)
        #expect(features & (1 << 3) != 0)   // the device's own bit
        let proto = try f.getProtocolFeatures()
        #expect(proto.contains(.config) && proto.contains(.replyAck))
        #expect(!proto.contains(.status) && !proto.contains(.inbandNotifications))
    }

    @Test func echoesThroughDirectAndIndirectChains() throws {
        let rig = try startedEcho(); let (ram, queue) = (rig.ram, rig.queue)
        for indirect in [false, true] {
            let req = ram.allocate(4), resp = ram.allocate(4)
            ram.write([1, 2, 3, 4], at: req)
            let head = queue.add([.init(req, 4, writable: false), .init(resp, 4, writable: true)], indirect: indirect)
            queue.notifyDevice()
            let used = queue.waitUsed()
            #expect(used.count == 1 && used.first?.head == head && used.first?.length == 4)
            #expect(ram.bytes(at: resp, count: 4) == [4, 3, 2, 1])
        }
    }

    @Test func replyAckReportsFailureAndConnectionSurvives() throws {
        let rig = try startedEcho(); let f = rig.f
        // SET_VRING_NUM with 3 (not a power of two) is refused, with an ack saying so.
        #expect(try f.setVringNum(0, 3) == false)
        // A request with a wrong payload size.
        try f.send(VhostUserRequest.setVringNum.rawValue, payload: [1, 2, 3], needReply: true)
        #expect(try f.readReply(for: VhostUserRequest.setVringNum.rawValue) == [1, 0, 0, 0, 0, 0, 0, 0])
        // An unknown request.
        try f.send(999, needReply: true)
        #expect(try f.readReply(for: 999) == [1, 0, 0, 0, 0, 0, 0, 0])
        // A vring index out of range.
        #expect(try f.setVringEnable(7, true) == false)
        // Still serving.
        #expect(try f.getFeatures() != 0)
    }

    @Test func configReadWriteAndOutOfRange() throws {
        let rig = try startedEcho(); let f = rig.f
        #expect(try f.getConfig(offset: 4, size: 4) == [4, 5, 6, 7])
        #expect(try f.setConfig(offset: 0, data: [9, 9]))
        #expect(try f.getConfig(offset: 0, size: 3) == [9, 9, 2])
        #expect(try f.getConfig(offset: 12, size: 8) == [])      // past the end: zero-size reply
        #expect(try f.setConfig(offset: 15, data: [1, 2]) == false)
    }

    @Test func getVringBaseStopsAndReportsProgress() throws {
        let rig = try startedEcho(); let (f, ram, queue) = (rig.f, rig.ram, rig.queue)
        for _ in 0..<3 {
            let b = ram.allocate(8)
            queue.add([.init(b, 8, writable: false), .init(b, 8, writable: true)])
        }
        queue.notifyDevice()
        #expect(queue.waitUsed(count: 3).count == 3)
        #expect(try f.getVringBase(0) == 3)
        // Stopped: a new chain is not processed until the ring is started again.
        let b = ram.allocate(8)
        queue.add([.init(b, 8, writable: false), .init(b, 8, writable: true)])
        queue.notifyDevice()
        #expect(queue.waitUsed(timeout: 0.3).isEmpty)
        #expect(try f.setVringBase(0, 3))
        #expect(try f.setVringKick(0, fd: queue.kick.rawValue))
        queue.notifyDevice()
        #expect(queue.waitUsed().count == 1)
    }

    @Test func loopingChainIsReturnedAndQueueGoesOn() throws {
        let rig = try startedEcho(); let (ram, queue) = (rig.ram, rig.queue)
        let b = ram.allocate(8)
        // Two descriptors pointing at each other: a loop.
        queue.writeRawDescriptor(index: 10, address: b.raw, length: 8, flags: 1, next: 11)
        queue.writeRawDescriptor(index: 11, address: b.raw, length: 8, flags: 1, next: 10)
        queue.publish(10)
        // A descriptor outside guest RAM.
        queue.writeRawDescriptor(index: 12, address: 1 << 40, length: 8, flags: 0, next: 0)
        queue.publish(12)
        // next out of range.
        queue.writeRawDescriptor(index: 13, address: b.raw, length: 8, flags: 1, next: 999)
        queue.publish(13)
        queue.notifyDevice()
        let used = queue.waitUsed(count: 3)
        #expect(used.map(\.head) == [10, 12, 13])
        #expect(used.allSatisfy { $0.length == 0 })
        // A good chain still works afterwards.
        let req = ram.allocate(2)
        ram.write([7, 8], at: req)
        queue.add([.init(req, 2, writable: false), .init(req, 2, writable: true)])
        queue.notifyDevice()
        #expect(queue.waitUsed().first?.length == 2)
        #expect(ram.bytes(at: req, count: 2) == [8, 7])
    }

    @Test func availIndexJumpStopsOnlyThatQueue() throws {
        let rig = try startedEcho(); let (f, queue) = (rig.f, rig.queue)
        queue.setAvailIndex(5000)
        queue.notifyDevice()
        #expect(queue.waitUsed(timeout: 0.3).isEmpty)
        #expect(try f.getFeatures() != 0)   // the connection is unaffected
    }

    @Test func memoryTableValidation() throws {
        let rig = try startedEcho(); let (f, ram) = (rig.f, rig.ram)
        // fd count mismatch.
        let (table, fds) = ram.memoryTable
        #expect(try f.request(.setMemTable, payload: table.bytes, fds: fds + fds) == false)
        // Overlapping regions.
        let r = table.regions[0]
        let two = MemoryTablePayload(regions: [r, r])
        #expect(try f.request(.setMemTable, payload: two.bytes, fds: fds + fds) == false)
        // Zero regions.
        #expect(try f.request(.setMemTable, payload: [0, 0, 0, 0, 0, 0, 0, 0]) == false)
        // Add and remove a region.
        let extra = try GuestRAM(layout: [(1 << 32, 1 << 16)])
        let er = extra.memoryTable.0.regions[0]
        #expect(try f.addMemoryRegion(er, fd: extra.memoryTable.1[0]))
        #expect(try f.removeMemoryRegion(er))
        #expect(try f.removeMemoryRegion(er) == false)
    }

    @Test func disconnectReleasesEveryFD() throws {
        let before = openFDSet()
        do {
            let rig = try startedEcho()
            let ram = rig.ram, queue = rig.queue
            let b = ram.allocate(8)
            queue.add([.init(b, 8, writable: false), .init(b, 8, writable: true)])
            queue.notifyDevice()
            #expect(queue.waitUsed().count == 1)
            #expect(!openFDSet().subtracting(before).isEmpty)   // socket, memfd, kick, call, worker wake fds
        }
        // The rig is gone: the frontend socket closed, so the server tears the connection down.
        // Objects above are gone: frontend socket closed; wait for the server thread to tear down.
        #expect(fdsLeaked(since: before).isEmpty)
    }
}

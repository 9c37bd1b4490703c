import CShims
import Foundation
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// Issue 11 §3: failure modes found by reading the code, each with the test that failed before
/// its fix.
@Suite(.serialized) struct FailureModeTests {
    /// §3.1: a region larger than its memfd is refused at SET_MEM_TABLE (before: accepted, and
    /// the first ring access past the file's end was a SIGBUS that killed the process).
    @Test func regionLargerThanItsFDIsRefused() throws {
        let served = try ServedDevice(EchoDevice())
        let f = VhostUserFrontend(socket: served.frontendSocket)
        let ram = try GuestRAM(size: 1 << 20)
        try f.setProtocolFeatures(f.getProtocolFeatures())
        let (table, fds) = ram.memoryTable
        var r = table.regions[0]
        r = MemoryRegionPayload(guestAddress: r.guestAddress, size: 2 << 20, userAddress: r.userAddress, mmapOffset: 0)
        #expect(try f.request(.setMemTable, payload: MemoryTablePayload(regions: [r]).bytes, fds: fds) == false)
        // An offset that pushes the end past the file is refused the same way.
        r = MemoryRegionPayload(guestAddress: r.guestAddress, size: 1 << 20, userAddress: r.userAddress, mmapOffset: 4096)
        #expect(try f.request(.setMemTable, payload: MemoryTablePayload(regions: [r]).bytes, fds: fds) == false)
        // The connection still serves: the honest table is taken.
        #expect(try f.setMemTable(ram))
    }

    /// §3.1: an unsealed guest-RAM memfd shrunk after SET_MEM_TABLE: the worker's next ring
    /// access faults; the SIGBUS is caught, only that connection is dropped (its fds released),
    /// and another connection in the same process keeps serving. Before: the process died.
    @Test func shrunkGuestRAMDropsOnlyThatConnection() throws {
        // A healthy neighbour, sealed RAM as QEMU's memory-backend-memfd gives.
        let goodServed = try ServedDevice(EchoDevice())
        let good = VhostUserFrontend(socket: goodServed.frontendSocket)
        let goodRAM = try GuestRAM(size: 1 << 20)
        let goodQueue = try DriverQueue(ram: goodRAM, size: 64)
        try good.start(ram: goodRAM, queues: [goodQueue])
        let before = openFDSet()
        do {
            let served = try ServedDevice(EchoDevice())
            do {
                let f = VhostUserFrontend(socket: served.frontendSocket)
                let ram = try GuestRAM(size: 1 << 20, sealed: false)
                let queue = try DriverQueue(ram: ram, size: 64)
                try f.start(ram: ram, queues: [queue])
                let b = ram.allocate(8)
                queue.add([.init(b, 8, writable: false), .init(b, 8, writable: true)])
                // The lie: the file shrinks to nothing under the backend's mapping. Nothing in this
                // process touches `ram` from here on.
                #expect(ftruncate(ram.regions[0].mapping.file.rawValue, 0) == 0)
                queue.notifyDevice()
                #expect(served.waitFinished(timeout: 5), "the faulting connection is dropped")
            }
        }
        // Every fd of the dropped connection (socket, memfd, kick, call, wake) is released.
        #expect(fdsLeaked(since: before).isEmpty)
        // The neighbour still echoes.
        let req = goodRAM.allocate(4), resp = goodRAM.allocate(4)
        goodRAM.write([1, 2, 3, 4], at: req)
        goodQueue.add([.init(req, 4, writable: false), .init(resp, 4, writable: true)])
        goodQueue.notifyDevice()
        #expect(goodQueue.waitUsed().count == 1)
        #expect(goodRAM.bytes(at: resp, count: 4) == [4, 3, 2, 1])
        withExtendedLifetime((good, goodServed)) {}
        _ = goodQueue
    }

    /// §3.5: the completions a device keeps (virgl fences) own the worker's wake eventfd: after
    /// the worker stopped and its connection is gone, the fd is still open (so a late fence
    /// cannot write into a reused number) and is closed with the last holder. Before: the
    /// completions held a bare Int32 and the fd closed with the worker.
    @Test func lateCompletionsKeepTheirWakeFD() throws {
        let device = DeferringDevice()
        do {
            let served = try ServedDevice(device)
            do {
                let f = VhostUserFrontend(socket: served.frontendSocket)
                let ram = try GuestRAM(size: 1 << 20)
                let queue = try DriverQueue(ram: ram, size: 64)
                try f.start(ram: ram, queues: [queue])
                _ = try f.getVringBase(0)
                f.disconnect()
            }
            #expect(served.waitFinished())
        }
        var kept: QueueCompletions? = try #require(device.completions.withLock { $0 })
        device.completions.withLock { $0 = nil }
        // The worker and its connection are gone; the completions still hold the wake eventfd.
        // (Not compared with the fds open before the test: a reused number for another eventfd
        // reads the same in both sets. Seen under ASan.)
        let held = openFDSet()
        kept?.complete(head: 0, length: 1)   // a late fence: ignored, and it writes into our own fd
        kept = nil
        // Dropping the last holder closes it (other tests' fds may come and go meanwhile: only
        // eventfds that were open and are now closed count).
        let closed = held.subtracting(openFDSet()).filter { $0.hasSuffix("anon_inode:[eventfd]") }
        #expect(!closed.isEmpty, "no eventfd closed with the completions")
    }

    /// §3.4: a backend-channel peer that answers half a message: one byte, or a header announcing
    /// 8 bytes that never come. The wait ends at the ack deadline (before: a blocking read held
    /// the send lock forever, and interrupt() could not end it).
    @Test(arguments: [[UInt8]([0x06]), VhostUserHeader(request: 6, flags: 0x5, size: 8).bytes])
    func halfAnAckEndsAtTheDeadline(_ half: [UInt8]) throws {
        let (mine, theirs) = try UnixSocket.pair()
        let channel = try BackendRequestChannel(socket: theirs, replyAck: true, ackTimeout: 0.3)
        startThread(name: "half-ack") {
            _ = try? VhostUserMessage.read(from: mine.rawValue)
            try? UnixSocket.send(mine.rawValue, [half])
        }
        let outcome = Mutex<BackendRequestChannel.Outcome?>(nil)
        let done = DispatchSemaphore(value: 0)
        let start = Date()
        startThread(name: "half-send") {
            let o = channel.send(.sharedObjectAdd, payload: [UInt8](repeating: 1, count: 16), waitForAck: true)
            outcome.withLock { $0 = o }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 3) == .success, "the send returns at the deadline")
        #expect(outcome.withLock { $0 } == .noAck)
        #expect(Date().timeIntervalSince(start) < 2)
        #expect(channel.isBroken)
        withExtendedLifetime(mine) {}
    }

    /// §3.4: an interrupt (queues stopping) ends a wait stuck in the middle of a reply's payload.
    @Test func interruptEndsAWaitInsideAHalfReply() throws {
        let (mine, theirs) = try UnixSocket.pair()
        let channel = try BackendRequestChannel(socket: theirs, replyAck: true, ackTimeout: 30)
        startThread(name: "half-ack") {
            _ = try? VhostUserMessage.read(from: mine.rawValue)
            try? UnixSocket.send(mine.rawValue, [VhostUserHeader(request: 6, flags: 0x5, size: 8).bytes])
        }
        let done = DispatchSemaphore(value: 0)
        startThread(name: "half-send") {
            _ = channel.send(.sharedObjectAdd, payload: [UInt8](repeating: 1, count: 16), waitForAck: true)
            done.signal()
        }
        usleep(300_000)
        channel.interrupt()
        #expect(done.wait(timeout: .now() + 3) == .success)
        withExtendedLifetime(mine) {}
    }
}

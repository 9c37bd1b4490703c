import Foundation
import Synchronization
import Testing
import VhostUser
import VirtioCore
import SystemSupport

/// The backend channel on its own: acks, refusals, the bounded and interruptible wait.
@Suite(.serialized) struct BackendRequestChannelTests {
    let uuid = [UInt8](0..<16)

    /// Answers the next request with `status` (from another thread).
    func answer(_ fd: OwnedFileDescriptor, status: UInt64) -> DispatchSemaphore {
        let done = DispatchSemaphore(value: 0)
        startThread(name: "ack") {
            if let m = try? VhostUserMessage.read(from: fd.rawValue) {
                try? VhostUserMessage.write(to: fd.rawValue, request: m.header.request,
                                            flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply, payload: ByteWriter().u64(status).bytes)
            }
            done.signal()
        }
        return done
    }

    @Test func ackedAndRefused() throws {
        let (mine, theirs) = try UnixSocket.pair()
        let channel = try BackendRequestChannel(socket: theirs, replyAck: true, ackTimeout: 2)
        var done = answer(mine, status: 0)
        #expect(channel.send(.sharedObjectAdd, payload: uuid, waitForAck: true) == .ok)
        done.wait()
        done = answer(mine, status: 1)
        #expect(channel.send(.sharedObjectRemove, payload: uuid, waitForAck: true) == .refused(1))
        done.wait()
        #expect(!channel.isBroken)
    }

    @Test func noAckIsBoundedThenTheChannelIsGivenUp() throws {
        let (mine, theirs) = try UnixSocket.pair()
        let channel = try BackendRequestChannel(socket: theirs, replyAck: true, ackTimeout: 0.2)
        let start = Date()
        #expect(channel.send(.sharedObjectAdd, payload: uuid, waitForAck: true) == .noAck)
        #expect(Date().timeIntervalSince(start) < 1)
        #expect(channel.isBroken)
        #expect(channel.send(.sharedObjectRemove, payload: uuid, waitForAck: true) == .notSent)
        let m = try #require(try VhostUserMessage.read(from: mine.rawValue))
        #expect(m.header.request == VhostUserBackendRequest.sharedObjectAdd.rawValue && m.header.needsReply && m.payload == uuid)
    }

    @Test func interruptEndsAWait() throws {
        let (mine, theirs) = try UnixSocket.pair()   // the peer stays open and silent
        let channel = try BackendRequestChannel(socket: theirs, replyAck: true, ackTimeout: 30)
        let finished = Atomic<Bool>(false)
        // Repeated: an interrupt that lands before the wait starts is dropped by design.
        startThread(name: "interrupt") { while !finished.load(ordering: .acquiring) { usleep(100_000); channel.interrupt() } }
        let start = Date()
        #expect(channel.send(.sharedObjectAdd, payload: uuid, waitForAck: true) == .noAck)
        finished.store(true, ordering: .releasing)
        let waited = Date().timeIntervalSince(start)
        #expect(waited >= 0.05 && waited < 5)
        withExtendedLifetime(mine) {}
    }

    @Test func withoutReplyAckNothingIsAwaited() throws {
        let (mine, theirs) = try UnixSocket.pair()
        let channel = try BackendRequestChannel(socket: theirs, replyAck: false)
        #expect(channel.send(.sharedObjectAdd, payload: uuid, waitForAck: true) == .ok)
        let m = try #require(try VhostUserMessage.read(from: mine.rawValue))
        #expect(!m.header.needsReply)
        channel.close()
        #expect(channel.send(.sharedObjectAdd, payload: uuid, waitForAck: false) == .notSent)
    }
}

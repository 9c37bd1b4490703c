import CShims
import Foundation
import FrontendSide
import SystemSupport
import Testing
import VhostUser
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif

/// Issue 11 §4, the backend channel with a real `vgpu-backend` process: the frontend's end of
/// BACKEND_REQ answers SHARED_OBJECT_ADD with garbage, with half a message, or not at all past a
/// header. The ASSIGN_UUID that sent the request is still answered (after the bounded wait), the
/// channel is given up (later assigns do not wait again), the device serves on, a second
/// frontend is served after the first leaves, the fd set comes back, and the log says it.
@Suite(.serialized) struct BackendChannelFaultTests {
    enum BadAnswer: String, CaseIterable, Sendable {
        /// 20 bytes that are no vhost-user message (a header with a wild request and size).
        case garbage
        /// One byte of the 12-byte header, then silence with the socket open.
        case halfHeader
        /// A reply header announcing the 8-byte status, and no payload.
        case headerWithoutPayload
        /// A well-formed reply, but to another request.
        case wrongRequest

        func bytes(for request: VhostUserMessage) -> [UInt8] {
            let reply = VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply
            switch self {
            case .garbage: return (0..<20).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 0xA5) }
            case .halfHeader: return [UInt8(truncatingIfNeeded: request.header.request)]
            case .headerWithoutPayload: return VhostUserHeader(request: request.header.request, flags: reply, size: 8).bytes
            case .wrongRequest:
                return VhostUserHeader(request: request.header.request &+ 1, flags: reply, size: 8).bytes + [UInt8](repeating: 0, count: 8)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)), arguments: BadAnswer.allCases)
    func badAnswersCostOnlyTheChannel(_ answer: BadAnswer) throws {
        let b = try BackendUnderTest(tag: "backend-channel-\(answer.rawValue)")
        defer { b.stop() }
        do { let (f, d, _) = try b.connect(); #expect(try d.createResource2D(id: 1, width: 16, height: 16).type == OK); f.disconnect() }
        usleep(200_000)
        let baseline = b.fds

        do {
            let (f, d, peer) = try b.connect()
            try f.setProtocolFeatures(f.protocolFeatures.union([.backendReq, .sharedObject]))
            let (mine, theirs) = try UnixSocket.pair()
            #expect(try f.setBackendReqFD(theirs.rawValue))
            // The frontend's end: reads the first request, answers it badly, keeps the socket open.
            let answered = DispatchSemaphore(value: 0)
            let channel = mine
            Thread.detachNewThread {
                if let m = try? VhostUserMessage.read(from: channel.rawValue) {
                    try? UnixSocket.send(channel.rawValue, [answer.bytes(for: m)])
                }
                answered.signal()
            }

            #expect(try d.createResource2D(id: 2, width: 8, height: 8).type == OK)
            let start = monotonicSeconds()
            #expect(try d.assignUUID(id: 2).type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue)
            let firstAssign = monotonicSeconds() - start
            #expect(answered.wait(timeout: .now() + 5) == .success)
            #expect(firstAssign < 3, "ASSIGN_UUID took \(firstAssign) s: the wait for the ack is not bounded")
            // Given up: the next assign sends nothing that could wait, and commands go on.
            #expect(try d.createResource2D(id: 3, width: 8, height: 8).type == OK)
            let second = monotonicSeconds()
            #expect(try d.assignUUID(id: 3).type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue)
            #expect(monotonicSeconds() - second < 0.5)
            #expect(try d.unref(id: 2).type == OK)
            // QEMU's stop path: GET_VRING_BASE on the control queue must be answered.
            _ = try f.getVringBase(0)
            f.disconnect()
            _ = (peer, theirs)
        }
        // A second frontend is served by the same process.
        do {
            let (f, d, _) = try b.connect()
            #expect(try d.createResource2D(id: 1, width: 16, height: 16).type == OK)
            f.disconnect()
        }
        #expect(b.alive)
        #expect(b.fdsBack(to: baseline).isEmpty, "fds of the dead channel still open: \(b.fdsBack(to: baseline, timeout: 0))")
        #expect(b.log.contains("SHARED_OBJECT_ADD"), "no log line about the channel: \(b.log.suffix(1500))")
        #expect(!b.log.contains("Fatal error"))
    }
}

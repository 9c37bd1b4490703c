import Foundation
import FrontendSide
import SystemPackage
import SystemSupport
import Testing
import VGPUResolve
import VGPUTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Every fd-taking receive path fails with a clear error when the peer attaches more fds than
/// it takes (MSG_CTRUNC), and leaks none of them: the resolve client and the display peer here,
/// the control client and the vhost-user read in their own test targets.
@Suite struct ReceiveTruncationTests {
    @Test func resolveClientFailsAndLeaksNothing() throws {
        let path = NSTemporaryDirectory() + "vgpu-resolve-ctrunc-\(getpid()).sock"
        defer { unlink(path) }
        let before = openFDSet()
        do {
            let listener = try UnixSocket.listen(path: path)
            let served = DispatchSemaphore(value: 0)
            // The server: reads the request line, answers with one line and twelve fds (the
            // control client takes 8 per receive).
            startThread(name: "ctrunc-server") {
                defer { served.signal() }
                guard let s = try? UnixSocket.accept(listener) else { return }
                var request: [UInt8] = []
                while !request.contains(UInt8(ascii: "\n")),
                      let got = try? UnixSocket.receiveSome(s.rawValue, maxBytes: 4096), !got.bytes.isEmpty {
                    request += got.bytes
                }
                guard let fds = try? (0..<12).map({ _ in try EventFD.make() }) else { return }
                let line = Array("{\"id\":1,\"result\":{}}\n".utf8)
                _ = sendWithFDs(s.rawValue, bytes: line, fds: fds.map(\.rawValue))
                _ = try? Poll.wait(s.rawValue, events: Int16(POLLIN), timeout: 2)   // until the client hangs up
            }
            do {
                let client = try ResolveClient(path: path, timeout: 2)
                #expect(throws: ResolveError.connectionLost(path: path, why: "receive from \(path): control data truncated: peer sent more fds than 8")) {
                    try client.ping()
                }
            }
            served.wait()
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }

    @Test func displayPeerRecordsTheErrorAndLeaksNothing() throws {
        let before = openFDSet()
        do {
            let (peer, backend) = try DisplayChannelPeer.connected()
            let fds = try (0..<(UnixSocket.maxFDsPerReceive + 4)).map { _ in try EventFD.make() }
            #expect(sendWithFDs(backend.rawValue, bytes: [0, 0, 0, 0], fds: fds.map(\.rawValue)) == 4)
            #expect(peer.waitFor(timeout: .seconds(5)) { $0.disconnected })
            #expect(peer.state.errors.contains("receive: control data truncated: peer sent more fds than \(UnixSocket.maxFDsPerReceive)"))
            peer.close()
            try backend.close()
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }
}

import ControlProtocol
import Foundation
import SystemSupport
import Testing
import VGPUTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A server that attaches more fds to a reply than the client takes: the client fails with
/// a message that says so, and closes every fd that arrived.
@Suite struct ControlClientTruncationTests {
    @Test func tooManyFDsWithAReplyIsAClearErrorAndLeaksNothing() throws {
        let path = NSTemporaryDirectory() + "vgpu-ctrunc-\(getpid()).sock"
        defer { unlink(path) }
        let before = openFDSet()
        do {
            let listener = try UnixSocket.listen(path: path)
            let client = try ControlClient(path: path)
            let server = try UnixSocket.accept(listener)
            let fds = try (0..<9).map { _ in try EventFD.make() }
            let line = Array("{\"id\":1,\"version\":1,\"result\":{}}\n".utf8)
            #expect(sendWithFDs(server.rawValue, bytes: line, fds: fds.map(\.rawValue)) == line.count)
            #expect(throws: ControlClientError.protocolError("receive from \(path): control data truncated: peer sent more fds than 8")) {
                _ = try client.readResponse(timeout: 2)
            }
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }
}

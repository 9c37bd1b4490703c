import Testing
import SystemPackage
import SystemSupport
import VGPUTestSupport
import VhostUser
#if canImport(Glibc)
import Glibc
#endif

/// A frontend that attaches more fds to one message than the backend takes: the read fails
/// (`messageTooLong`) and every fd that arrived is closed.
@Suite struct TruncatedControlDataTests {
    @Test func readFailsAndLeaksNothing() throws {
        let before = openFDSet()
        do {
            let (frontend, backend) = try UnixSocket.pair()
            let fds = try (0..<(UnixSocket.maxFDsPerReceive + 4)).map { _ in try EventFD.make() }
            let header = VhostUserHeader(request: 5, flags: 0x1, size: 0)   // SET_MEM_TABLE, no payload
            #expect(sendWithFDs(frontend.rawValue, bytes: header.bytes, fds: fds.map(\.rawValue)) == VhostUserHeader.size)
            #expect(throws: Errno.messageTooLong) { _ = try VhostUserMessage.read(from: backend.rawValue) }
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }
}

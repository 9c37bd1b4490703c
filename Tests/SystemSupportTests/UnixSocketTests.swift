import Testing
import SystemPackage
import SystemSupport
import VGPUTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The fd-passing socket: a peer that attaches more fds than the receiver takes gets a clear
/// error, and nothing leaks (every fd that arrived is closed).
@Suite struct UnixSocketTests {
    /// Sends three bytes with `count` fds (eventfds, closed here once sent) from `socket`.
    static func send(_ count: Int, fdsFrom socket: OwnedFileDescriptor) throws {
        let fds = try (0..<count).map { _ in try EventFD.make() }
        #expect(sendWithFDs(socket.rawValue, bytes: [1, 2, 3], fds: fds.map(\.rawValue)) == 3)
    }

    /// What `receiveSome` threw, or nil.
    static func receiveError(_ socket: OwnedFileDescriptor, maxFDs: Int) -> SocketReceiveError? {
        do throws(SocketReceiveError) {
            _ = try UnixSocket.receiveSome(socket.rawValue, maxBytes: 16, maxFDs: maxFDs)
            return nil
        } catch { return error }
    }

    @Test func fdsUpToTheLimitArrive() throws {
        let (a, b) = try UnixSocket.pair()
        try Self.send(4, fdsFrom: a)
        let got = try UnixSocket.receiveSome(b.rawValue, maxBytes: 16, maxFDs: 4)
        #expect(got.bytes == [1, 2, 3])
        #expect(got.fds.count == 4)
    }

    /// More fds than the caller's limit (but within the control buffer): the shim keeps what
    /// fits and reports truncation; the receiver closes those too.
    @Test func moreFDsThanTheCallerTakesFailsAndLeaksNothing() throws {
        let before = openFDSet()
        do {
            let (a, b) = try UnixSocket.pair()
            try Self.send(6, fdsFrom: a)
            let error = Self.receiveError(b, maxFDs: 4)
            #expect(error == .controlDataTruncated(maxFDs: 4))
            #expect(error?.description == "control data truncated: peer sent more fds than 4")
            #expect(error?.errno == .messageTooLong)
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }

    /// More fds than the control buffer holds: the kernel sets MSG_CTRUNC (and closes the
    /// overflow itself); the receiver closes the ones that did arrive.
    @Test func moreFDsThanTheControlBufferHoldsFailsAndLeaksNothing() throws {
        let before = openFDSet()
        do {
            let (a, b) = try UnixSocket.pair()
            try Self.send(UnixSocket.maxFDsPerReceive + 4, fdsFrom: a)
            #expect(Self.receiveError(b, maxFDs: UnixSocket.maxFDsPerReceive) == .controlDataTruncated(maxFDs: UnixSocket.maxFDsPerReceive))
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }

    /// The exact-count receive (vhost-user's) reports truncation as `messageTooLong`, and the
    /// fds gathered so far go with the caller's array.
    @Test func exactReceiveReportsTruncationAsMessageTooLong() throws {
        let before = openFDSet()
        do {
            let (a, b) = try UnixSocket.pair()
            try Self.send(UnixSocket.maxFDsPerReceive + 1, fdsFrom: a)
            var fds: [OwnedFileDescriptor] = []
            #expect(throws: Errno.messageTooLong) { _ = try UnixSocket.receive(b.rawValue, count: 3, fds: &fds) }
            #expect(fds.isEmpty)
        }
        #expect(fdsLeaked(since: before).isEmpty)
    }

    @Test func endOfStreamIsZeroBytes() throws {
        var (a, b): (OwnedFileDescriptor?, OwnedFileDescriptor) = try UnixSocket.pair()
        a = nil
        _ = a
        let got = try UnixSocket.receiveSome(b.rawValue, maxBytes: 16)
        #expect(got.bytes.isEmpty && got.fds.isEmpty)
    }
}

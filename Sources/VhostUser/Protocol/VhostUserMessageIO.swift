import SystemSupport
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// One vhost-user message as received: header, payload and the fds that came with it.
public struct VhostUserMessage: Sendable {
    public var header: VhostUserHeader
    public var payload: [UInt8]
    public var fds: [OwnedFileDescriptor]

    /// Largest payload accepted; anything longer is a broken peer (the spec's largest is ~4 KiB).
    public static let maxPayload = 64 * 1024

    public init(header: VhostUserHeader, payload: [UInt8], fds: [OwnedFileDescriptor]) {
        self.header = header; self.payload = payload; self.fds = fds
    }

    /// Reads one message. nil on orderly EOF.
    public static func read(from fd: Int32) throws(Errno) -> VhostUserMessage? {
        try read(from: fd, until: nil)
    }

    /// Reads one message; every wait ends at `deadline` (`timedOut`) or when `wake` is readable
    /// (`canceled`), the header's and the payload's alike. nil on orderly EOF.
    public static func read(from fd: Int32, until deadline: Double?, wake: Int32? = nil) throws(Errno) -> VhostUserMessage? {
        var fds: [OwnedFileDescriptor] = []
        guard let headerBytes = try UnixSocket.receive(fd, count: VhostUserHeader.size, fds: &fds, until: deadline, wake: wake)
        else { return nil }
        let header = headerBytes.withUnsafeBytes { VhostUserHeader(bytes: $0) }
        guard Int(header.size) <= maxPayload else { throw .messageTooLong }
        let payload = header.size == 0 ? [] : (try UnixSocket.receive(fd, count: Int(header.size), fds: &fds, until: deadline, wake: wake) ?? [])
        guard payload.count == Int(header.size) else { throw .connectionReset }
        return VhostUserMessage(header: header, payload: payload, fds: fds)
    }

    /// Sends a message with the given request, flags and payload.
    public static func write(to fd: Int32, request: UInt32, flags: UInt32, payload: [UInt8], fds: [Int32] = []) throws(Errno) {
        let header = VhostUserHeader(request: request, flags: flags, size: UInt32(payload.count))
        try UnixSocket.send(fd, [header.bytes, payload], fds: fds)
    }
}

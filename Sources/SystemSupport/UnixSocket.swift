// The one fd-passing socket: UNIX stream sockets with SCM_RIGHTS. Every recvmsg in the project
// goes through `UnixSocket.receiveSome`, which fails on MSG_CTRUNC and closes what did arrive.

import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A UNIX stream socket carrying fds with SCM_RIGHTS (what SwiftNIO cannot do on streams).
public enum UnixSocket {
    /// Binds and listens on `path`, replacing a stale socket file. Mode is set by the caller's umask
    /// unless `mode` is given.
    public static func listen(path: String, backlog: Int32 = 4, mode: mode_t? = nil) throws(Errno) -> OwnedFileDescriptor {
        let fd = OwnedFileDescriptor(try retryingEINTR { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        var addr = try address(path)
        unlink(path)
        try retryingEINTR { withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } }
        if let mode { _ = try retryingEINTR { chmod(path, mode) } }
        try retryingEINTR { Glibc.listen(fd.rawValue, backlog) }
        return fd
    }

    public static func accept(_ listener: OwnedFileDescriptor) throws(Errno) -> OwnedFileDescriptor {
        OwnedFileDescriptor(try retryingEINTR { vgpu_accept_cloexec(listener.rawValue) })
    }

    public static func connect(path: String) throws(Errno) -> OwnedFileDescriptor {
        let fd = OwnedFileDescriptor(try retryingEINTR { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) })
        var addr = try address(path)
        try retryingEINTR { withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } }
        return fd
    }

    /// A connected pair (tests, the display channel peer).
    public static func pair() throws(Errno) -> (OwnedFileDescriptor, OwnedFileDescriptor) {
        var fds: [Int32] = [0, 0]
        try retryingEINTR { socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) }
        return (OwnedFileDescriptor(fds[0]), OwnedFileDescriptor(fds[1]))
    }

    private static func address(_ path: String) throws(Errno) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .fileNameTooLong }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in raw.copyBytes(from: bytes) }
        return addr
    }

    /// Writes all of `parts` (one message) with `fds` attached to the first byte. Blocking.
    public static func send(_ fd: Int32, _ parts: [[UInt8]], fds: [Int32] = []) throws(Errno) {
        let all = parts.count == 1 ? parts[0] : parts.flatMap { $0 }
        var sent = 0
        var fdsToSend = fds
        while sent < all.count || (all.isEmpty && !fdsToSend.isEmpty) {
            let n = all.withUnsafeBytes { raw -> Int in
                var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress! + sent), iov_len: all.count - sent)
                return fdsToSend.withUnsafeBufferPointer { f in vgpu_sendmsg_fds(fd, &iov, 1, f.baseAddress, Int32(f.count)) }
            }
            if n < 0 { throw Errno(rawValue: errno) }
            fdsToSend = []
            sent += n
        }
    }

    /// The most fds one `receiveSome` takes (the C shim's control buffer).
    public static let maxFDsPerReceive = 16

    /// One recvmsg: up to `buffer.count` bytes and up to `maxFDs` fds, EINTR retried. 0 bytes is
    /// end of stream. When the peer attached more fds than `maxFDs` (MSG_CTRUNC, or more than the
    /// shim keeps), every fd that did arrive is closed and `.controlDataTruncated` thrown: the
    /// bytes cannot be matched to their fds any more, so the stream is unusable.
    public static func receiveSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer,
                                   maxFDs: Int = maxFDsPerReceive) throws(SocketReceiveError) -> (count: Int, fds: [OwnedFileDescriptor]) {
        precondition(maxFDs > 0 && maxFDs <= maxFDsPerReceive, "maxFDs out of range")
        var raw = [Int32](repeating: -1, count: maxFDs)
        var nfds: Int32 = 0, truncated: Int32 = 0
        let n = raw.withUnsafeMutableBufferPointer { r in
            vgpu_recvmsg_fds(fd, buffer.baseAddress, buffer.count, r.baseAddress, Int32(maxFDs), &nfds, &truncated)
        }
        let fds = raw[0..<Int(nfds)].map(OwnedFileDescriptor.init)
        if n < 0 { throw .system(currentErrno()) }
        if truncated != 0 { throw .controlDataTruncated(maxFDs: maxFDs) }   // dropping `fds` closes them
        return (n, fds)
    }

    /// `receiveSome` into a new array of at most `maxBytes` bytes (empty: end of stream).
    public static func receiveSome(_ fd: Int32, maxBytes: Int, maxFDs: Int = maxFDsPerReceive) throws(SocketReceiveError) -> (bytes: [UInt8], fds: [OwnedFileDescriptor]) {
        var bytes = [UInt8](repeating: 0, count: maxBytes)
        let got = try bytes.withUnsafeMutableBytes { b in
            Result { () throws(SocketReceiveError) in try receiveSome(fd, into: b, maxFDs: maxFDs) }
        }.get()
        bytes.removeLast(maxBytes - got.count)
        return (bytes, got.fds)
    }

    /// Reads exactly `count` bytes; collects fds that arrive with them. Returns nil on EOF at a
    /// message boundary (`count` bytes not started).
    public static func receive(_ fd: Int32, count: Int, fds: inout [OwnedFileDescriptor]) throws(Errno) -> [UInt8]? {
        try receive(fd, count: count, fds: &fds, until: nil)
    }

    /// `receive`, but every wait for bytes ends at `until` (`timedOut`) or when `wake` becomes
    /// readable (`canceled`): a peer that sends half a message cannot hold the caller.
    /// Truncated control data (more than `maxFDsPerReceive` fds) is `messageTooLong`.
    public static func receive(_ fd: Int32, count: Int, fds: inout [OwnedFileDescriptor], until deadline: Double?,
                               wake: Int32? = nil) throws(Errno) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            if deadline != nil || wake != nil { try Poll.waitReadable(fd, until: deadline, wake: wake) }
            let part = try buffer.withUnsafeMutableBytes { b in
                Result { () throws(SocketReceiveError) in try receiveSome(fd, into: UnsafeMutableRawBufferPointer(rebasing: b[got...])) }
            }.mapError(\.errno).get()
            fds += part.fds
            if part.count == 0 {
                if got == 0 { return nil }
                throw .connectionReset
            }
            got += part.count
        }
        return buffer
    }
}

/// Why `UnixSocket.receiveSome` failed.
public enum SocketReceiveError: Error, Equatable, CustomStringConvertible {
    case system(Errno)
    /// The peer attached more fds than the receiver takes (MSG_CTRUNC); those that arrived were closed.
    case controlDataTruncated(maxFDs: Int)

    /// As an `Errno` for APIs that throw one: truncation is `messageTooLong`.
    public var errno: Errno {
        switch self {
        case let .system(e): e
        case .controlDataTruncated: .messageTooLong
        }
    }

    public var description: String {
        switch self {
        case let .system(e): "\(e)"
        case let .controlDataTruncated(n): "control data truncated: peer sent more fds than \(n)"
        }
    }
}

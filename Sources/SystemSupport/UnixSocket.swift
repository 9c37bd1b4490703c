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

    /// Waits until `fd` is readable (or hung up), at most until `deadline`, or until `wake` is.
    public static func waitReadable(_ fd: Int32, until deadline: Double?, wake: Int32?) throws(Errno) {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake ?? -1, events: Int16(POLLIN), revents: 0)]
        while true {
            var ms: Int32 = -1
            if let deadline {
                let left = deadline - monotonicSeconds()
                guard left > 0 else { throw .timedOut }
                ms = Int32(min(left * 1000, 1_000_000)) + 1
            }
            fds[0].revents = 0; fds[1].revents = 0
            let n = poll(&fds, 2, ms)
            if n < 0 { if errno == EINTR { continue }; throw Errno(rawValue: errno) }
            if fds[1].revents != 0 { throw .canceled }
            if fds[0].revents != 0 { return }
        }
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

    /// Reads exactly `count` bytes; collects fds that arrive with them. Returns nil on EOF at a
    /// message boundary (`count` bytes not started).
    public static func receive(_ fd: Int32, count: Int, fds: inout [OwnedFileDescriptor]) throws(Errno) -> [UInt8]? {
        try receive(fd, count: count, fds: &fds, until: nil)
    }

    /// `receive`, but every wait for bytes ends at `until` (`timedOut`) or when `wake` becomes
    /// readable (`canceled`): a peer that sends half a message cannot hold the caller.
    public static func receive(_ fd: Int32, count: Int, fds: inout [OwnedFileDescriptor], until deadline: Double?,
                               wake: Int32? = nil) throws(Errno) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = 0
        var raw = [Int32](repeating: -1, count: 16)
        while got < count {
            if deadline != nil || wake != nil { try waitReadable(fd, until: deadline, wake: wake) }
            var nfds: Int32 = 0, truncated: Int32 = 0
            let n = buffer.withUnsafeMutableBytes { b in
                raw.withUnsafeMutableBufferPointer { r in
                    vgpu_recvmsg_fds(fd, b.baseAddress! + got, count - got, r.baseAddress, 16, &nfds, &truncated)
                }
            }
            for i in 0..<Int(nfds) { fds.append(OwnedFileDescriptor(raw[i])) }
            if n < 0 { throw Errno(rawValue: errno) }
            if n == 0 {
                if got == 0 { return nil }
                throw .connectionReset
            }
            got += n
        }
        return buffer
    }
}

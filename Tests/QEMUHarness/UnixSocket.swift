import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A connected or listening `AF_UNIX` stream socket with timeouts on every blocking call.
final class UnixSocket: @unchecked Sendable {
    private(set) var fd: Int32
    let path: String

    private init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    private static func address(_ path: String) throws -> (sockaddr_un, socklen_t) {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { throw HarnessError.socket(operation: "path too long", path: path, errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return (addr, socklen_t(MemoryLayout<sockaddr_un>.size))
    }

    private static func makeSocket(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError.socket(operation: "socket", path: path, errno: errno) }
        return fd
    }

    /// Connects, retrying while the path is absent or refuses, until `timeout`.
    static func connect(path: String, timeout: Duration) throws -> UnixSocket {
        let deadline = Deadline(timeout)
        var (addr, len) = try address(path)
        while true {
            let fd = try makeSocket(path)
            let rc = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, len) }
            }
            if rc == 0 { return UnixSocket(fd: fd, path: path) }
            let err = errno
            Glibc.close(fd)
            guard err == ENOENT || err == ECONNREFUSED || err == EAGAIN, !deadline.expired else {
                if deadline.expired { throw HarnessError.timeout(waitingFor: "connect to \(path)", after: timeout) }
                throw HarnessError.socket(operation: "connect", path: path, errno: err)
            }
            usleep(50_000)
        }
    }

    /// Binds and listens on `path` (replacing a stale socket file).
    static func listen(path: String) throws -> UnixSocket {
        unlink(path)
        let fd = try makeSocket(path)
        var (addr, len) = try address(path)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        guard rc == 0 else {
            let err = errno; Glibc.close(fd)
            throw HarnessError.socket(operation: "bind", path: path, errno: err)
        }
        guard Glibc.listen(fd, 1) == 0 else {
            let err = errno; Glibc.close(fd)
            throw HarnessError.socket(operation: "listen", path: path, errno: err)
        }
        return UnixSocket(fd: fd, path: path)
    }

    /// Waits up to `timeoutMilliseconds` for a connection; nil if none came.
    func accept(timeoutMilliseconds: Int32) throws -> UnixSocket? {
        guard try poll(events: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        let conn = Glibc.accept(fd, nil, nil)
        guard conn >= 0 else {
            if errno == EAGAIN || errno == EINTR { return nil }
            throw HarnessError.socket(operation: "accept", path: path, errno: errno)
        }
        _ = fcntl(conn, F_SETFD, FD_CLOEXEC)
        return UnixSocket(fd: conn, path: path)
    }

    /// True when `events` are ready before the timeout.
    func poll(events: Int16, timeoutMilliseconds: Int32) throws -> Bool {
        guard fd >= 0 else { throw HarnessError.socket(operation: "poll (closed)", path: path, errno: EBADF) }
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        let rc = Glibc.poll(&pfd, 1, timeoutMilliseconds)
        if rc < 0 {
            if errno == EINTR { return false }
            throw HarnessError.socket(operation: "poll", path: path, errno: errno)
        }
        return rc > 0
    }

    /// Reads what is available within the timeout. Empty array: nothing yet. nil: end of stream.
    func read(max: Int = 65536, timeoutMilliseconds: Int32) throws -> [UInt8]? {
        guard try poll(events: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) else { return [] }
        var buffer = [UInt8](repeating: 0, count: max)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, max) }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return [] }
            if errno == ECONNRESET { return nil }
            throw HarnessError.socket(operation: "read", path: path, errno: errno)
        }
        if n == 0 { return nil }
        return Array(buffer[0..<n])
    }

    /// Writes all of `bytes`, waiting at most `timeout` in total.
    func write(_ bytes: [UInt8], timeout: Duration) throws {
        let deadline = Deadline(timeout)
        var offset = 0
        while offset < bytes.count {
            guard try poll(events: Int16(POLLOUT), timeoutMilliseconds: deadline.remainingMilliseconds()) else {
                if deadline.expired { throw HarnessError.timeout(waitingFor: "write to \(path)", after: timeout) }
                continue
            }
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw HarnessError.socket(operation: "write", path: path, errno: errno)
            }
            offset += n
        }
    }
}

extension UnixSocket {
    /// True when a socket at `path` is bound and listening (read from /proc/net/unix), so a
    /// peer can connect; the check itself does not connect (a vhost-user backend serves only
    /// its first connection).
    static func isListening(path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFSOCK else { return false }
        // Read to EOF: procfs files report size 0, so size-based readers can see nothing.
        guard let handle = FileHandle(forReadingAtPath: "/proc/net/unix"),
              let data = try? handle.readToEnd() else { return true }
        try? handle.close()
        let table = String(decoding: data, as: UTF8.self)
        // Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = __SO_ACCEPTCON.
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 8, fields[7...].joined(separator: " ") == path else { continue }
            if let flags = UInt32(fields[3], radix: 16), flags & 0x10000 != 0 { return true }
        }
        return false
    }
}

import Foundation
import SystemPackage
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// A connected or listening `AF_UNIX` stream socket with timeouts on every blocking call, over
/// SystemSupport's socket calls and bounded polls (which retry EINTR).
final class UnixSocket: @unchecked Sendable {
    private var socket: OwnedFileDescriptor?
    let path: String

    private init(_ socket: OwnedFileDescriptor, path: String) {
        self.socket = socket
        self.path = path
    }

    func close() { socket = nil }

    /// The open fd, or a harness error naming `operation`.
    private func open(for operation: String) throws -> Int32 {
        guard let socket else { throw HarnessError.socket(operation: "\(operation) (closed)", path: path, errno: EBADF) }
        return socket.rawValue
    }

    /// Connects, retrying while the path is absent or refuses, until `timeout`.
    static func connect(path: String, timeout: Duration) throws -> UnixSocket {
        let deadline = Deadline(timeout)
        while true {
            do throws(Errno) { return UnixSocket(try SystemSupport.UnixSocket.connect(path: path), path: path) } catch {
                guard [.noSuchFileOrDirectory, .connectionRefused, .resourceTemporarilyUnavailable].contains(error), !deadline.expired else {
                    if deadline.expired { throw HarnessError.timeout(waitingFor: "connect to \(path)", after: timeout) }
                    throw HarnessError.socket(operation: "connect", path: path, errno: error.rawValue)
                }
            }
            usleep(50_000)
        }
    }

    /// Binds and listens on `path` (replacing a stale socket file).
    static func listen(path: String) throws -> UnixSocket {
        do throws(Errno) { return UnixSocket(try SystemSupport.UnixSocket.listen(path: path, backlog: 1), path: path) } catch {
            throw HarnessError.socket(operation: "listen", path: path, errno: error.rawValue)
        }
    }

    /// Waits up to `timeoutMilliseconds` for a connection; nil if none came.
    func accept(timeoutMilliseconds: Int32) throws -> UnixSocket? {
        guard try poll(events: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        guard let listener = socket else { throw HarnessError.socket(operation: "accept (closed)", path: path, errno: EBADF) }
        do throws(Errno) { return UnixSocket(try SystemSupport.UnixSocket.accept(listener), path: path) } catch {
            if error == .resourceTemporarilyUnavailable { return nil }
            throw HarnessError.socket(operation: "accept", path: path, errno: error.rawValue)
        }
    }

    /// True when `events` are ready before the timeout.
    func poll(events: Int16, timeoutMilliseconds: Int32) throws -> Bool {
        let fd = try open(for: "poll")
        let timeout = timeoutMilliseconds < 0 ? nil : Double(timeoutMilliseconds) / 1000
        do throws(Errno) { return try Poll.wait(fd, events: events, timeout: timeout) } catch {
            throw HarnessError.socket(operation: "poll", path: path, errno: error.rawValue)
        }
    }

    /// Reads what is available within the timeout. Empty array: nothing yet. nil: end of stream.
    func read(max: Int = 65536, timeoutMilliseconds: Int32) throws -> [UInt8]? {
        guard try poll(events: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) else { return [] }
        let fd = try open(for: "read")
        var buffer = [UInt8](repeating: 0, count: max)
        let n: Int
        do throws(Errno) { n = try buffer.withUnsafeMutableBytes { b in Result { () throws(Errno) in try readRetryingEINTR(fd, into: b) } }.get() } catch {
            if error == .resourceTemporarilyUnavailable { return [] }
            if error == .connectionReset { return nil }
            throw HarnessError.socket(operation: "read", path: path, errno: error.rawValue)
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
            let fd = try open(for: "write")
            do throws(Errno) {
                offset += try bytes[offset...].withUnsafeBytes { b in
                    Result { () throws(Errno) in try retryingEINTR { Glibc.send(fd, b.baseAddress, b.count, Int32(MSG_NOSIGNAL)) } }
                }.get()
            } catch {
                if error == .resourceTemporarilyUnavailable { continue }
                throw HarnessError.socket(operation: "write", path: path, errno: error.rawValue)
            }
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

import CShims
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// What went wrong talking to a backend, as one line for `vgpuctl`.
public enum ControlClientError: Error, Equatable, CustomStringConvertible {
    /// No socket to talk to.
    case noSocket(String)
    /// connect(2) failed; `errno` says why (ECONNREFUSED: a stale socket, EACCES: no access).
    case connect(String, errno: Int32)
    /// The server answered with an error (unknown id, refused peer, ...).
    case server(ControlError)
    /// The server's reply made no sense, or the connection broke.
    case protocolError(String)

    public var description: String {
        switch self {
        case let .noSocket(m), let .connect(m, _), let .protocolError(m): m
        case let .server(e): e.message
        }
    }
}

/// A connection to a backend's control socket: the one client of the protocol (vgpuctl, and
/// VGPUResolve's ResolveClient and ResolveWatch). One request at a time; after `watch`, call
/// `nextEvent()` repeatedly, or poll `fileDescriptor` and take `pendingEvents()`.
public final class ControlClient {
    public let path: String
    private let socket: OwnedFileDescriptor
    private var buffer: [UInt8] = []
    private var receivedFDs: [OwnedFileDescriptor] = []
    private var nextID = 1

    /// `sendTimeout`: seconds a request may wait for a server that does not read (nil: for ever).
    public init(path: String, sendTimeout: Int? = nil) throws(ControlClientError) {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else { throw .noSocket("no control socket at \(path): \(String(cString: strerror(errno)))") }
        do { socket = try UnixSocket.connect(path: path) } catch {
            throw .connect("cannot connect to \(path): \(error)\(error == .connectionRefused ? " (stale socket? is vgpu-backend running?)" : "")",
                           errno: error.rawValue)
        }
        if let sendTimeout {
            var tv = timeval(tv_sec: sendTimeout, tv_usec: 0)
            _ = setsockopt(socket.rawValue, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    /// The socket: readable when reply or event lines are waiting.
    public var fileDescriptor: Int32 { socket.rawValue }

    /// Sends one request and waits for its reply (each line at most `timeout` seconds; nil: for
    /// ever). Returns the result and the fd that came with it (export, dump, resolve). A server
    /// error becomes `.server`.
    public func call(_ method: ControlMethod, resource: String? = nil, holder: String? = nil,
                     timeout: Double? = nil) throws(ControlClientError) -> (ControlResult, OwnedFileDescriptor?) {
        let id = nextID
        nextID += 1
        receivedFDs.removeAll()
        let line = ControlCodec.encodeLine(ControlRequest(id: id, method: method, resource: resource, holder: holder))
        var sendError: Errno?
        do { try UnixSocket.send(socket.rawValue, [line]) } catch { sendError = error }
        // Even if the send failed (a refused peer is disconnected at once), the server may have
        // said why before closing: read that first.
        var response: ControlResponse
        repeat {
            // Event lines of an earlier watch on this connection are skipped.
            do { response = try readResponse(timeout: timeout) } catch {
                if let sendError { throw .protocolError("cannot send to \(path): \(sendError)") }
                throw error
            }
        } while response.event != nil || (response.id != nil && response.id != id)
        if let error = response.error { throw .server(error) }
        guard response.ok, let result = response.result else { throw .protocolError("reply without a result") }
        let fd = receivedFDs.isEmpty ? nil : receivedFDs.removeFirst()
        receivedFDs.removeAll()
        return (result, fd)
    }

    /// Sends raw bytes (tests: garbage, partial lines).
    public func sendRaw(_ bytes: [UInt8]) throws(ControlClientError) {
        do { try UnixSocket.send(socket.rawValue, [bytes]) } catch { throw .protocolError("send: \(error)") }
    }

    /// The next event after `call(.watch)`; nil when the server closes the connection.
    public func nextEvent() throws(ControlClientError) -> EventRecord? {
        while true {
            let r: ControlResponse
            do { r = try readResponse() } catch {
                if case .protocolError("connection closed") = error { return nil }
                throw error
            }
            if let e = r.event { return e }
            if let error = r.error { throw .server(error) }
        }
    }

    /// The events already received after `call(.watch)`, without waiting for more: lines are
    /// read while the socket has bytes; other lines are skipped. An error means the connection
    /// is gone.
    public func pendingEvents() throws(ControlClientError) -> [EventRecord] {
        var events: [EventRecord] = []
        while buffer.contains(UInt8(ascii: "\n")) || socketReadable() {
            let r = try readResponse()
            if let e = r.event { events.append(e) }   // a stray reply is skipped
        }
        return events
    }

    private func socketReadable() -> Bool {
        var p = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) > 0
    }

    /// Reads one reply line. `timeout` in seconds (nil: wait for ever).
    public func readResponse(timeout: Double? = nil) throws(ControlClientError) -> ControlResponse {
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<nl])
                buffer.removeSubrange(...nl)
                do { return try ControlCodec.decodeResponse(line) } catch {
                    throw .protocolError("unreadable reply from \(path): \(String(decoding: line.prefix(200), as: UTF8.self))")
                }
            }
            // A failed poll falls through: the receive reports the error.
            if let timeout, (try? Poll.wait(socket.rawValue, events: Int16(POLLIN), timeout: timeout)) == false {
                throw .protocolError("no reply within \(timeout) s")
            }
            let received: (bytes: [UInt8], fds: [OwnedFileDescriptor])
            do { received = try UnixSocket.receiveSome(socket.rawValue, maxBytes: 64 * 1024, maxFDs: 8) } catch {
                throw .protocolError("receive from \(path): \(error)")
            }
            receivedFDs += received.fds
            if received.bytes.isEmpty { throw .protocolError("connection closed") }
            buffer += received.bytes
        }
    }
}

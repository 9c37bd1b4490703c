import CShims
import ControlProtocol
import VirtioCore
import Foundation
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// What went wrong resolving a buffer, as one line.
public enum ResolveError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No socket file at the path (ENOENT): the backend is not running, or another path.
    case noSocket(path: String)
    /// The file exists but nobody listens (ECONNREFUSED): a backend that died.
    case refused(path: String)
    /// The backend does not serve this user (`permission-denied`).
    case permissionDenied(path: String, message: String)
    /// connect(2) failed otherwise.
    case connect(path: String, errno: Int32)
    /// The backend has no resource with this UUID (never assigned, or unreferenced).
    case notFound(String)
    /// The backend answered with another error (`code` from docs/control-protocol.md).
    case server(code: String, message: String)
    /// The connection broke, timed out, or the reply made no sense.
    case connectionLost(path: String, why: String)

    public var description: String {
        switch self {
        case let .noSocket(p): "control socket \(p): no such file (is vgpu-backend running with --control-socket \(p)?)"
        case let .refused(p): "control socket \(p): connection refused (stale socket: the backend is gone)"
        case let .permissionDenied(p, m): "control socket \(p): permission denied: \(m)"
        case let .connect(p, e): "control socket \(p): cannot connect: \(String(cString: strerror(e)))"
        case let .notFound(m): m
        case let .server(c, m): "\(c): \(m)"
        case let .connectionLost(p, why): "control socket \(p): \(why)"
        }
    }

    /// True when the connection is unusable and must be made again.
    public var isConnectionFailure: Bool {
        switch self {
        case .noSocket, .refused, .permissionDenied, .connect, .connectionLost: true
        case .notFound, .server: false
        }
    }
}

/// The layout of a resolved buffer, as the exporting backend describes it.
public struct ResolvedLayout: Equatable, Sendable {
    public var uuid: ResourceUUID
    /// The GPU device (vgpu-backend's device id) and the guest's resource id on it.
    public var device: UInt32
    public var resource: UInt32
    /// DRM fourcc code; 0 when unknown (a foreign buffer).
    public var fourcc: UInt32
    public var width: UInt32
    public var height: UInt32
    /// Bytes per row, and of the first pixel, in the buffer.
    public var stride: Int
    public var offset: Int
    /// Bytes of the host buffer.
    public var size: Int
    /// "udmabuf", "dma-heap", "drm-dumb", "memfd", "gl-texture"; "" when unknown.
    public var kind: String
    /// "zero-copy", "on-transfer", "on-flush"; "" when unknown.
    public var coherency: String
    /// "dmabuf" or "memfd" (what the fd is); "" for `show`, which passes no fd.
    public var handleType: String
    /// DRM format modifier (0: linear).
    public var modifier: UInt64

    public init(uuid: ResourceUUID, device: UInt32, resource: UInt32, fourcc: UInt32, width: UInt32, height: UInt32, stride: Int, offset: Int,
                size: Int, kind: String, coherency: String, handleType: String, modifier: UInt64) {
        self.uuid = uuid; self.device = device; self.resource = resource; self.fourcc = fourcc; self.width = width; self.height = height
        self.stride = stride; self.offset = offset; self.size = size; self.kind = kind; self.coherency = coherency
        self.handleType = handleType; self.modifier = modifier
    }
}

/// A buffer received from `resolve`: the fd (owned: closed when the last reference goes) and
/// its layout. Map it with `mmap(PROT_READ, MAP_SHARED)`; bracket reads of a dmabuf with
/// `DMA_BUF_IOCTL_SYNC`.
public struct ResolvedBuffer: Sendable {
    public let fd: OwnedFileDescriptor
    public let layout: ResolvedLayout
}

/// A client of vgpu-backend's control socket for device backends that import buffers by UUID
/// (docs/control-protocol.md, "resolve"). One request at a time (serialized inside); thread
/// safe. It links neither the GPU device nor virglrenderer.
public final class ResolveClient: Sendable {
    public let path: String
    /// Seconds a reply may take before the connection is given up.
    public let timeout: Double
    private let connection: Mutex<LineConnection>

    /// Connects; throws at once when the socket is missing (`noSocket`) or refuses (`refused`).
    public init(path: String, timeout: Double = 2) throws(ResolveError) {
        self.path = path
        self.timeout = timeout
        connection = Mutex(try LineConnection(path: path))
    }

    /// `resolve`: the buffer's fd and layout, and a hold recorded for this connection (shown as
    /// `holder` in `vgpuctl list`) until `release`, until this client goes away, or until the
    /// resource does.
    public func resolve(uuid: ResourceUUID, holder: String) throws(ResolveError) -> ResolvedBuffer {
        let (reply, fd) = try call(.resolve, resource: uuid.description, holder: holder)
        guard let b = reply.result?.buffer else { throw .connectionLost(path: path, why: "resolve reply without a buffer") }
        guard let fd else { throw .connectionLost(path: path, why: "resolve reply without an fd") }
        return ResolvedBuffer(fd: fd, layout: ResolvedLayout(b, uuid: uuid))
    }

    /// `release`: drops this connection's holds on `uuid`. Returns how many there were (0 after
    /// the resource went away: its holds went with it).
    @discardableResult
    public func release(uuid: ResourceUUID) throws(ResolveError) -> Int {
        try call(.release, resource: uuid.description).0.result?.released ?? 0
    }

    /// `show`: the layout of the resource that has `uuid` now (no fd, no hold; offset 0), or
    /// nil when no resource has it.
    public func show(uuid: ResourceUUID) throws(ResolveError) -> ResolvedLayout? {
        do throws(ResolveError) {
            let (reply, _) = try call(.show, resource: uuid.description)
            guard let r = reply.result?.detail?.resource else { throw ResolveError.connectionLost(path: path, why: "show reply without a resource") }
            return ResolvedLayout(uuid: uuid, device: r.device, resource: r.id, fourcc: DRMFourCC.code(r.fourcc) ?? 0, width: r.width, height: r.height,
                                  stride: r.stride, offset: 0, size: r.hostBuffer.size, kind: r.hostBuffer.kind,
                                  coherency: r.hostBuffer.coherency, handleType: "", modifier: 0)
        } catch {
            if case .notFound = error { return nil }
            throw error
        }
    }

    /// Whether a resource has `uuid` now.
    public func exists(uuid: ResourceUUID) throws(ResolveError) -> Bool { try show(uuid: uuid) != nil }

    /// A request that any backend answers quickly (`show` of the nil UUID: not-found), to learn
    /// at start whether the socket serves this user.
    public func ping() throws(ResolveError) {
        _ = try show(uuid: ResourceUUID(bytes: [UInt8](repeating: 0, count: 16))!)
    }

    private func call(_ method: ControlMethod, resource: String, holder: String? = nil) throws(ResolveError) -> (ControlResponse, OwnedFileDescriptor?) {
        let timeout = self.timeout
        return try connection.withLock { c throws(ResolveError) in
            try c.call(ControlRequest(id: 0, method: method, resource: resource, holder: holder), timeout: timeout)
        }
    }
}

extension ResolvedLayout {
    /// From an export/resolve reply's layout (the fd came with it).
    init(_ b: BufferLayout, uuid: ResourceUUID) {
        self.init(uuid: uuid, device: b.device, resource: b.resource, fourcc: b.drmFormat, width: b.width, height: b.height, stride: b.stride,
                  offset: b.offset, size: b.size, kind: b.kind ?? "", coherency: b.coherency ?? "", handleType: b.handleType, modifier: b.modifier)
    }
}

/// One control socket connection: request lines out, reply lines (and fds) in (the wire types
/// and codec are ControlProtocol's).
struct LineConnection {
    let path: String
    let socket: OwnedFileDescriptor
    private var buffer: [UInt8] = []
    private var fds: [OwnedFileDescriptor] = []
    private var nextID = 1

    init(path: String) throws(ResolveError) {
        self.path = path
        do { socket = try UnixSocket.connect(path: path) } catch {
            switch error {
            case .noSuchFileOrDirectory: throw .noSocket(path: path)
            case .connectionRefused: throw .refused(path: path)
            case .permissionDenied: throw .permissionDenied(path: path, message: "no access to the socket file")
            default: throw .connect(path: path, errno: error.rawValue)
            }
        }
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        _ = setsockopt(socket.rawValue, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        buffer.reserveCapacity(64 * 1024)
    }

    /// Sends `request` (its id replaced) and returns the reply with that id and the fd that came
    /// with it. Event lines of a watch on this connection are kept for `takeLine`.
    mutating func call(_ request: ControlRequest, timeout: Double) throws(ResolveError) -> (ControlResponse, OwnedFileDescriptor?) {
        var request = request
        request.id = nextID
        nextID += 1
        fds.removeAll()
        let line = ControlCodec.encodeLine(request)
        var sendError: Errno?
        do { try UnixSocket.send(socket.rawValue, [line]) } catch { sendError = error }
        // A refused peer gets its reason before the server closes: read it even if send failed.
        let deadline = monotonicSeconds() + timeout
        while true {
            guard let (bytes, fd) = takeLine(matching: request.id) else {
                let left = deadline - monotonicSeconds()
                guard left > 0 else { throw .connectionLost(path: path, why: "no reply within \(timeout) s") }
                do { try fill(wait: left) } catch {
                    if let sendError { throw .connectionLost(path: path, why: "cannot send: \(sendError)") }
                    throw error
                }
                continue
            }
            guard let reply = try? ControlCodec.decodeResponse(bytes) else {
                throw .connectionLost(path: path, why: "unreadable reply: \(String(decoding: bytes.prefix(200), as: UTF8.self))")
            }
            if let e = reply.error {
                switch e.code {
                case .notFound: throw .notFound(e.message)
                case .permissionDenied: throw .permissionDenied(path: path, message: e.message)
                default: throw .server(code: e.code.rawValue, message: e.message)
                }
            }
            return (reply, fd)
        }
    }

    /// The next complete line (and the fd received with it), if any.
    mutating func takeLine() -> ([UInt8], OwnedFileDescriptor?)? {
        guard let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let line = Array(buffer[..<nl])
        buffer.removeSubrange(...nl)
        return (line, fds.isEmpty ? nil : fds.removeFirst())
    }

    /// The reply line whose id is `id` (or that has no id: an error about an unparsable
    /// request); event lines before it stay queued in order, other lines are dropped.
    private mutating func takeLine(matching id: Int) -> ([UInt8], OwnedFileDescriptor?)? {
        var start = buffer.startIndex
        while let nl = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = Array(buffer[start..<nl])
            if let reply = try? ControlCodec.decodeResponse(line), reply.event == nil, reply.id == nil || reply.id == id {
                buffer.removeSubrange(start...nl)
                // The server sends an fd only with a reply (export, resolve), never with an event line.
                return (line, fds.isEmpty ? nil : fds.removeFirst())
            }
            start = nl + 1
        }
        return nil
    }

    /// Reads what the socket has, waiting up to `wait` seconds for the first bytes.
    mutating func fill(wait: Double) throws(ResolveError) {
        var p = pollfd(fd: socket.rawValue, events: Int16(POLLIN), revents: 0)
        let ready = poll(&p, 1, Int32(max(0, wait) * 1000))
        if ready == 0 {
            if wait > 0 { throw .connectionLost(path: path, why: "no reply within \(wait) s") }
            return
        }
        var raw = [Int32](repeating: -1, count: 4)
        var nfds: Int32 = 0, truncated: Int32 = 0
        let chunk = 64 * 1024
        let old = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: chunk))
        let n = buffer.withUnsafeMutableBytes { b in
            raw.withUnsafeMutableBufferPointer { r in
                vgpu_recvmsg_fds(socket.rawValue, b.baseAddress! + old, chunk, r.baseAddress, 4, &nfds, &truncated)
            }
        }
        buffer.removeLast(chunk - max(0, n))
        for i in 0..<Int(nfds) { fds.append(OwnedFileDescriptor(raw[i])) }
        if n < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            throw .connectionLost(path: path, why: "receive: \(String(cString: strerror(errno)))")
        }
        if n == 0 { throw .connectionLost(path: path, why: "connection closed by the backend") }
    }
}

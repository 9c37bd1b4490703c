import CShims
import Foundation
import Synchronization
import SystemPackage
import VhostUser
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
    public var uuid: BufferUUID
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

    public init(uuid: BufferUUID, device: UInt32, resource: UInt32, fourcc: UInt32, width: UInt32, height: UInt32, stride: Int, offset: Int,
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
    public func resolve(uuid: BufferUUID, holder: String) throws(ResolveError) -> ResolvedBuffer {
        let (reply, fd) = try call(Request(id: 0, method: "resolve", resource: uuid.description, holder: holder))
        guard let b = reply.result?.buffer else { throw .connectionLost(path: path, why: "resolve reply without a buffer") }
        guard let fd else { throw .connectionLost(path: path, why: "resolve reply without an fd") }
        return ResolvedBuffer(fd: fd, layout: b.layout(uuid))
    }

    /// `release`: drops this connection's holds on `uuid`. Returns how many there were (0 after
    /// the resource went away: its holds went with it).
    @discardableResult
    public func release(uuid: BufferUUID) throws(ResolveError) -> Int {
        try call(Request(id: 0, method: "release", resource: uuid.description, holder: nil)).0.result?.released ?? 0
    }

    /// `show`: the layout of the resource that has `uuid` now (no fd, no hold; offset 0), or
    /// nil when no resource has it.
    public func show(uuid: BufferUUID) throws(ResolveError) -> ResolvedLayout? {
        do throws(ResolveError) {
            let (reply, _) = try call(Request(id: 0, method: "show", resource: uuid.description, holder: nil))
            guard let r = reply.result?.detail?.resource else { throw ResolveError.connectionLost(path: path, why: "show reply without a resource") }
            return ResolvedLayout(uuid: uuid, device: r.device, resource: r.id, fourcc: fourccCode(r.fourcc), width: r.width, height: r.height,
                                  stride: r.stride, offset: 0, size: r.hostBuffer.size, kind: r.hostBuffer.kind,
                                  coherency: r.hostBuffer.coherency, handleType: "", modifier: 0)
        } catch {
            if case .notFound = error { return nil }
            throw error
        }
    }

    /// Whether a resource has `uuid` now.
    public func exists(uuid: BufferUUID) throws(ResolveError) -> Bool { try show(uuid: uuid) != nil }

    /// A request that any backend answers quickly (`show` of the nil UUID: not-found), to learn
    /// at start whether the socket serves this user.
    public func ping() throws(ResolveError) {
        _ = try show(uuid: BufferUUID(bytes: [UInt8](repeating: 0, count: 16))!)
    }

    private func call(_ request: Request) throws(ResolveError) -> (Reply, OwnedFileDescriptor?) {
        let timeout = self.timeout
        return try connection.withLock { c throws(ResolveError) in try c.call(request, timeout: timeout) }
    }
}

/// The control socket's lifecycle events a holder cares about (`watch`).
public struct ResolveEvent: Equatable, Sendable {
    /// "unref", "device-reset", "device-disconnected" (and the other kinds: "created",
    /// "uuid-assigned", "device-connected", "dropped").
    public var kind: String
    public var device: UInt32
    public var resource: UInt32?
    public var uuid: BufferUUID?
    /// Events the server dropped before this one (its queue was full): a holder must then
    /// assume anything may have gone.
    public var dropped: Int
}

/// A `watch` subscription on its own connection. Poll `fileDescriptor` for input, then call
/// `events()`; an error means the connection is gone (the backend exited or dropped us).
public final class ResolveWatch: Sendable {
    public let path: String
    private let connection: Mutex<LineConnection>
    /// Readable when event lines are waiting.
    public let fileDescriptor: Int32

    public init(path: String, timeout: Double = 2) throws(ResolveError) {
        self.path = path
        var c = try LineConnection(path: path)
        _ = try c.call(Request(id: 0, method: "watch", resource: nil, holder: nil), timeout: timeout)
        fileDescriptor = c.socket.rawValue
        connection = Mutex(c)
    }

    /// Every event already received, reading what the socket has without blocking.
    public func events() throws(ResolveError) -> [ResolveEvent] {
        try connection.withLock { c throws(ResolveError) -> [ResolveEvent] in
            try c.fill(wait: 0)
            var out: [ResolveEvent] = []
            while let (line, _) = c.takeLine() {
                guard let reply = try? JSONDecoder().decode(Reply.self, from: Data(line)), let e = reply.event else { continue }
                out.append(ResolveEvent(kind: e.kind, device: e.device, resource: e.resource, uuid: e.uuid.flatMap(BufferUUID.init(string:)),
                                        dropped: e.dropped ?? 0))
            }
            return out
        }
    }
}

// MARK: wire (docs/control-protocol.md: one JSON object per line; fds by SCM_RIGHTS)

struct Request: Encodable {
    var version = 1
    var id: Int
    var method: String
    var resource: String?
    var holder: String?
    init(id: Int, method: String, resource: String?, holder: String?) {
        self.id = id; self.method = method; self.resource = resource; self.holder = holder
    }
}

struct Reply: Decodable {
    struct Failure: Decodable { var code: String; var message: String }
    struct Buffer: Decodable {
        var device: UInt32
        var resource: UInt32
        var handleType: String
        var kind: String?
        var coherency: String?
        var drmFormat: UInt32
        var width: UInt32
        var height: UInt32
        var stride: Int
        var offset: Int
        var size: Int
        var modifier: UInt64
        func layout(_ uuid: BufferUUID) -> ResolvedLayout {
            ResolvedLayout(uuid: uuid, device: device, resource: resource, fourcc: drmFormat, width: width, height: height, stride: stride,
                           offset: offset, size: size, kind: kind ?? "", coherency: coherency ?? "", handleType: handleType, modifier: modifier)
        }
    }
    struct Row: Decodable {
        struct HostBuffer: Decodable { var kind: String; var size: Int; var coherency: String }
        var device: UInt32
        var id: UInt32
        var fourcc: String
        var width: UInt32
        var height: UInt32
        var stride: Int
        var hostBuffer: HostBuffer
    }
    struct Detail: Decodable { var resource: Row }
    struct Result: Decodable {
        var buffer: Buffer?
        var detail: Detail?
        var released: Int?
        var watching: Bool?
    }
    struct Event: Decodable {
        var kind: String
        var device: UInt32
        var resource: UInt32?
        var uuid: String?
        var dropped: Int?
    }
    var id: Int?
    var ok: Bool
    var result: Result?
    var error: Failure?
    var event: Event?
}

/// "XR24" -> the DRM fourcc code; 0 for anything that is not four ASCII characters.
func fourccCode(_ name: String) -> UInt32 {
    let b = Array(name.utf8)
    guard b.count == 4 else { return 0 }
    return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
}

/// One control socket connection: request lines out, reply lines (and fds) in.
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
    mutating func call(_ request: Request, timeout: Double) throws(ResolveError) -> (Reply, OwnedFileDescriptor?) {
        var request = request
        request.id = nextID
        nextID += 1
        fds.removeAll()
        var line = [UInt8]((try? JSONEncoder().encode(request)) ?? Data())
        line.append(UInt8(ascii: "\n"))
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
            guard let reply = try? JSONDecoder().decode(Reply.self, from: Data(bytes)) else {
                throw .connectionLost(path: path, why: "unreadable reply: \(String(decoding: bytes.prefix(200), as: UTF8.self))")
            }
            if let e = reply.error {
                switch e.code {
                case "not-found": throw .notFound(e.message)
                case "permission-denied": throw .permissionDenied(path: path, message: e.message)
                default: throw .server(code: e.code, message: e.message)
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
            if let reply = try? JSONDecoder().decode(Reply.self, from: Data(line)), reply.event == nil, reply.id == nil || reply.id == id {
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
        // A failed poll falls through: the receive reports the error.
        if (try? Poll.wait(socket.rawValue, events: Int16(POLLIN), timeout: max(0, wait))) == false {
            if wait > 0 { throw .connectionLost(path: path, why: "no reply within \(wait) s") }
            return
        }
        let received: (bytes: [UInt8], fds: [OwnedFileDescriptor])
        do { received = try UnixSocket.receiveSome(socket.rawValue, maxBytes: 64 * 1024, maxFDs: 4) } catch {
            if error == .system(.wouldBlock) { return }
            throw .connectionLost(path: path, why: "receive: \(error)")
        }
        fds += received.fds
        buffer += received.bytes
        if received.bytes.isEmpty { throw .connectionLost(path: path, why: "connection closed by the backend") }
    }
}

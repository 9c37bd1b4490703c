import ControlProtocol
import SystemSupport
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif

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
    private let connection: Mutex<ControlClient>

    /// Connects; throws at once when the socket is missing (`noSocket`) or refuses (`refused`).
    public init(path: String, timeout: Double = 2) throws(ResolveError) {
        self.path = path
        self.timeout = timeout
        connection = Mutex(try ControlClient(resolvingThrough: path))
    }

    /// `resolve`: the buffer's fd and layout, and a hold recorded for this connection (shown as
    /// `holder` in `vgpuctl list`) until `release`, until this client goes away, or until the
    /// resource does.
    public func resolve(uuid: ResourceUUID, holder: String) throws(ResolveError) -> ResolvedBuffer {
        let (reply, fd) = try call(.resolve, resource: uuid.description, holder: holder)
        guard let b = reply.buffer else { throw .connectionLost(path: path, why: "resolve reply without a buffer") }
        guard let fd else { throw .connectionLost(path: path, why: "resolve reply without an fd") }
        return ResolvedBuffer(fd: fd, layout: ResolvedLayout(b, uuid: uuid))
    }

    /// `release`: drops this connection's holds on `uuid`. Returns how many there were (0 after
    /// the resource went away: its holds went with it).
    @discardableResult
    public func release(uuid: ResourceUUID) throws(ResolveError) -> Int {
        try call(.release, resource: uuid.description).0.released ?? 0
    }

    /// `show`: the layout of the resource that has `uuid` now (no fd, no hold; offset 0), or
    /// nil when no resource has it.
    public func show(uuid: ResourceUUID) throws(ResolveError) -> ResolvedLayout? {
        do throws(ResolveError) {
            let (reply, _) = try call(.show, resource: uuid.description)
            guard let r = reply.detail?.resource else { throw ResolveError.connectionLost(path: path, why: "show reply without a resource") }
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

    private func call(_ method: ControlMethod, resource: String, holder: String? = nil) throws(ResolveError) -> (ControlResult, OwnedFileDescriptor?) {
        let (path, timeout) = (self.path, self.timeout)
        return try connection.withLock { c throws(ResolveError) in
            do throws(ControlClientError) { return try c.call(method, resource: resource, holder: holder, timeout: timeout) } catch { throw ResolveError(error, path: path) }
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

extension ControlClient {
    /// A connection for ResolveClient and ResolveWatch: a send to a backend that does not read
    /// gives up after 2 s, and connection failures are ResolveErrors.
    convenience init(resolvingThrough path: String) throws(ResolveError) {
        do { try self.init(path: path, sendTimeout: 2) } catch { throw ResolveError(error, path: path) }
    }
}

extension ResolveError {
    /// What the control client's error means to an importer.
    init(_ error: ControlClientError, path: String) {
        switch error {
        case .noSocket: self = .noSocket(path: path)
        case let .connect(_, errno):
            switch errno {
            case ENOENT: self = .noSocket(path: path)
            case ECONNREFUSED: self = .refused(path: path)
            case EACCES: self = .permissionDenied(path: path, message: "no access to the socket file")
            default: self = .connect(path: path, errno: errno)
            }
        case let .server(e):
            switch e.code {
            case .notFound: self = .notFound(e.message)
            case .permissionDenied: self = .permissionDenied(path: path, message: e.message)
            default: self = .server(code: e.code.rawValue, message: e.message)
            }
        case let .protocolError(why): self = .connectionLost(path: path, why: why)
        }
    }
}

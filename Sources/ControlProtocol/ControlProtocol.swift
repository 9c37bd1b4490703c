import Foundation

/// The control socket protocol, version 1 (docs/control-protocol.md): newline-delimited JSON
/// over a UNIX stream socket. One request per line, one response per line (plus event lines for
/// `watch`). Replies to `export` and `dump` carry one fd (SCM_RIGHTS) with the response line.
public enum ControlProtocol {
    public static let version = 1
    /// Longest request line accepted, newline excluded; a longer one closes the connection.
    public static let maxLineBytes = 64 * 1024
}

public enum ControlMethod: String, Codable, Sendable, CaseIterable {
    case list, show, watch, export, dump
    /// `export` plus a hold: the connection is recorded as holding the resource until it sends
    /// `release`, closes, or the resource goes away (unref, device reset or disconnect).
    case resolve
    /// Undoes one `resolve` of a UUID by this connection (its hold count goes down by one).
    case release
}

/// `{"version":1,"id":N,"method":"show","resource":"1:3"}`
public struct ControlRequest: Codable, Equatable, Sendable {
    public var version: Int
    public var id: Int
    public var method: String
    /// For show/export/dump: `DEVICE:ID`, a resource id, or a UUID.
    public var resource: String?
    /// For resolve: free text naming who holds the buffer (shown in `list`), e.g.
    /// "vgpu-import-device".
    public var holder: String?

    public init(id: Int, method: ControlMethod, resource: String? = nil, holder: String? = nil) {
        self.version = ControlProtocol.version
        self.id = id
        self.method = method.rawValue
        self.resource = resource
        self.holder = holder
    }
}

/// Machine-readable error codes.
public enum ControlErrorCode: String, Codable, Sendable {
    case badRequest = "bad-request"
    case unsupportedVersion = "unsupported-version"
    case unknownMethod = "unknown-method"
    case notFound = "not-found"
    case ambiguous = "ambiguous"
    case requestTooLarge = "request-too-large"
    case permissionDenied = "permission-denied"
    case busy = "busy"
    case internalError = "internal"
}

public struct ControlError: Codable, Equatable, Sendable, Error, CustomStringConvertible {
    public var code: ControlErrorCode
    public var message: String
    public init(_ code: ControlErrorCode, _ message: String) { self.code = code; self.message = message }
    public var description: String { message }
}

/// A host buffer as the control socket describes it. `kind` is what the fd really is: a
/// dmabuf kind only when the kernel made one; nothing is called a dmabuf that is not one.
public struct HostBufferSummary: Codable, Equatable, Sendable {
    /// "udmabuf", "dma-heap", "drm-dumb" (dmabufs) or "memfd".
    public var kind: String
    /// Bytes of the buffer (whole pages).
    public var size: Int
    /// "zero-copy" (the guest's pages: guest writes show at once) or "on-transfer" (the host
    /// copy: changes when TRANSFER_TO_HOST_2D lands).
    public var coherency: String
    /// "guest-ram" or "host-copy": whose pages a consumer maps.
    public var source: String
    /// True once RESOURCE_ASSIGN_UUID chose this buffer for export (before: the host copy).
    public var exported: Bool
    /// Why the resource is a shadow although zero copy is on (unaligned backing, ...).
    public var shadowReason: String?

    public init(kind: String, size: Int, coherency: String = "on-transfer", source: String = "host-copy", exported: Bool = false,
                shadowReason: String? = nil) {
        self.kind = kind; self.size = size; self.coherency = coherency; self.source = source; self.exported = exported
        self.shadowReason = shadowReason
    }
}

/// One resource row of `list` (and the head of `show`). No guest addresses.
public struct ResourceSummary: Codable, Equatable, Sendable {
    public var device: UInt32
    public var id: UInt32
    public var uuid: String?
    public var format: String
    /// DRM fourcc name of the host buffer's layout, e.g. "XR24".
    public var fourcc: String
    public var width: UInt32
    public var height: UInt32
    public var stride: Int
    public var hostBuffer: HostBufferSummary
    public var backingEntries: Int
    public var backingBytes: UInt64
    public var scanouts: [UInt32]
    /// Seconds since creation.
    public var ageSeconds: Double
    /// Control clients holding the resource's buffer (`resolve`); absent from older servers.
    public var holders: [ResourceHolder]?
    public init(device: UInt32, id: UInt32, uuid: String? = nil, format: String, fourcc: String, width: UInt32, height: UInt32, stride: Int, hostBuffer: HostBufferSummary, backingEntries: Int, backingBytes: UInt64, scanouts: [UInt32], ageSeconds: Double, holders: [ResourceHolder]? = nil) {
        self.device = device; self.id = id; self.uuid = uuid; self.format = format; self.fourcc = fourcc; self.width = width; self.height = height; self.stride = stride; self.hostBuffer = hostBuffer; self.backingEntries = backingEntries; self.backingBytes = backingBytes; self.scanouts = scanouts; self.ageSeconds = ageSeconds; self.holders = holders
    }
}

/// A control client that resolved a resource and has not released it.
public struct ResourceHolder: Codable, Equatable, Sendable {
    /// What the client said it is (`resolve`'s `holder`).
    public var holder: String
    /// The client's pid (SO_PEERCRED).
    public var pid: Int32
    /// Resolves not yet released on that connection.
    public var count: Int
    public init(holder: String, pid: Int32, count: Int) { self.holder = holder; self.pid = pid; self.count = count }
}

public struct DeviceSummary: Codable, Equatable, Sendable {
    public var id: UInt32
    public var label: String
    public var connectedSeconds: Double
    public var resources: [ResourceSummary]
    public init(id: UInt32, label: String, connectedSeconds: Double, resources: [ResourceSummary]) {
        self.id = id; self.label = label; self.connectedSeconds = connectedSeconds; self.resources = resources
    }
}

/// One ATTACH_BACKING entry. Guest DMA namespace: shown for diagnosis only, never an identity.
public struct GuestRange: Codable, Equatable, Sendable {
    /// Guest physical address, "0x..." hex.
    public var guestPhysicalAddress: String
    public var length: UInt32
    public init(guestPhysicalAddress: String, length: UInt32) {
        self.guestPhysicalAddress = guestPhysicalAddress; self.length = length
    }
}

public struct ResourceDetail: Codable, Equatable, Sendable {
    public var resource: ResourceSummary
    public var deviceLabel: String
    public var createdAt: Double
    /// The guest pages the resource is transferred from, in order.
    public var guestBacking: [GuestRange]
    public init(resource: ResourceSummary, deviceLabel: String, createdAt: Double, guestBacking: [GuestRange]) {
        self.resource = resource; self.deviceLabel = deviceLabel; self.createdAt = createdAt; self.guestBacking = guestBacking
    }
}

/// The layout of an exported buffer (the fd comes with the reply).
public struct BufferLayout: Codable, Equatable, Sendable {
    public var uuid: String?
    public var device: UInt32
    public var resource: UInt32
    /// "dmabuf" (udmabuf, dma-heap, DRM dumb: a duplicate of the backend's dmabuf fd) or "memfd"
    /// (a sealed-size memfd opened read-only, mappable with mmap(PROT_READ, MAP_SHARED)).
    public var handleType: String
    /// The host buffer kind ("udmabuf", "dma-heap", "drm-dumb", "memfd") and its coherency
    /// ("zero-copy" or "on-transfer"); absent from older servers.
    public var kind: String?
    public var coherency: String?
    /// True when the UUID belongs to no device of this backend and was resolved through the
    /// frontend (SHARED_OBJECT_LOOKUP): then only `handleType` and `size` are known.
    public var foreign: Bool?
    public var format: String
    public var fourcc: String
    /// The DRM fourcc code (drm_fourcc.h) as a number.
    public var drmFormat: UInt32
    public var width: UInt32
    public var height: UInt32
    public var stride: Int
    public var offset: Int
    public var size: Int
    /// DRM format modifier: 0 = DRM_FORMAT_MOD_LINEAR.
    public var modifier: UInt64

    public init(uuid: String?, device: UInt32, resource: UInt32, handleType: String, format: String, fourcc: String, drmFormat: UInt32,
                width: UInt32, height: UInt32, stride: Int, offset: Int, size: Int, modifier: UInt64) {
        self.uuid = uuid; self.device = device; self.resource = resource; self.handleType = handleType; self.format = format
        self.fourcc = fourcc; self.drmFormat = drmFormat; self.width = width; self.height = height; self.stride = stride
        self.offset = offset; self.size = size; self.modifier = modifier
    }
}

/// A lifecycle event (`watch`).
public struct EventRecord: Codable, Equatable, Sendable {
    public var kind: String
    public var device: UInt32
    public var resource: UInt32?
    public var uuid: String?
    public var time: Double
    /// Events this subscriber lost to a full queue just before this one.
    public var dropped: Int?
    public init(kind: String, device: UInt32, resource: UInt32? = nil, uuid: String? = nil, time: Double, dropped: Int? = nil) {
        self.kind = kind; self.device = device; self.resource = resource; self.uuid = uuid; self.time = time; self.dropped = dropped
    }
}

/// The result of a successful request; which fields are set depends on the method.
public struct ControlResult: Codable, Equatable, Sendable {
    public var devices: [DeviceSummary]?
    public var detail: ResourceDetail?
    public var buffer: BufferLayout?
    public var watching: Bool?
    /// `release`: 1 when a hold was dropped, 0 when the connection held none (e.g. after an unref).
    public var released: Int?
    public init(devices: [DeviceSummary]? = nil, detail: ResourceDetail? = nil, buffer: BufferLayout? = nil, watching: Bool? = nil,
                released: Int? = nil) {
        self.devices = devices; self.detail = detail; self.buffer = buffer; self.watching = watching; self.released = released
    }
}

/// One line from the server: a response (`ok` true with `result`, or false with `error`), or an event.
public struct ControlResponse: Codable, Equatable, Sendable {
    public var version: Int
    /// The request's id; nil when the request could not be parsed far enough to have one.
    public var id: Int?
    public var ok: Bool
    public var result: ControlResult?
    public var error: ControlError?
    public var event: EventRecord?

    public static func success(_ id: Int, _ result: ControlResult) -> ControlResponse {
        ControlResponse(version: ControlProtocol.version, id: id, ok: true, result: result, error: nil, event: nil)
    }
    public static func failure(_ id: Int?, _ error: ControlError) -> ControlResponse {
        ControlResponse(version: ControlProtocol.version, id: id, ok: false, result: nil, error: error, event: nil)
    }
    public static func eventLine(_ id: Int, _ event: EventRecord) -> ControlResponse {
        ControlResponse(version: ControlProtocol.version, id: id, ok: true, result: nil, error: nil, event: event)
    }
}

import CShims

/// Why a command failed, one case per `VIRTIO_GPU_RESP_ERR_*` (virtio 1.2 section 5.7.6.7).
///
/// Which failure maps to which code (mirrors QEMU's `hw/display/virtio-gpu.c` where it is
/// consistent; see the dispatch documentation for every case):
/// - `unspec`: unsupported or unknown command (3D, capsets, blob: virgl is not offered), resource
///   without backing for a transfer or detach, attaching backing twice.
/// - `outOfMemory`: host resource caps reached or the host allocation failed.
/// - `invalidScanoutID`: scanout id ≥ the device's number of scanouts.
/// - `invalidResourceID`: resource id 0 where a resource is required, unknown id, id already in use.
/// - `invalidContextID`: unused by 2D.
/// - `invalidParameter`: malformed request: truncated command, unknown format, zero size, rectangle
///   outside the resource, backing entries that are empty, overflow or lie outside guest RAM,
///   backing too small for a transfer.
public enum GPUError: Error, Sendable, CaseIterable, CustomStringConvertible {
    case unspec
    case outOfMemory
    case invalidScanoutID
    case invalidResourceID
    case invalidContextID
    case invalidParameter

    /// The `VIRTIO_GPU_RESP_ERR_*` response type.
    public var responseType: UInt32 {
        switch self {
        case .unspec: VIRTIO_GPU_RESP_ERR_UNSPEC.rawValue
        case .outOfMemory: VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY.rawValue
        case .invalidScanoutID: VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID.rawValue
        case .invalidResourceID: VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID.rawValue
        case .invalidContextID: VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID.rawValue
        case .invalidParameter: VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER.rawValue
        }
    }

    public init?(responseType: UInt32) {
        guard let e = Self.allCases.first(where: { $0.responseType == responseType }) else { return nil }
        self = e
    }

    public var description: String {
        switch self {
        case .unspec: "ERR_UNSPEC"
        case .outOfMemory: "ERR_OUT_OF_MEMORY"
        case .invalidScanoutID: "ERR_INVALID_SCANOUT_ID"
        case .invalidResourceID: "ERR_INVALID_RESOURCE_ID"
        case .invalidContextID: "ERR_INVALID_CONTEXT_ID"
        case .invalidParameter: "ERR_INVALID_PARAMETER"
        }
    }
}

/// A failed command: the response code for the guest and the detail for the (rate-limited) log.
/// The detail is built only on the error path.
public struct GPUFailure: Error, Sendable, CustomStringConvertible {
    public let error: GPUError
    public let detail: String

    public init(_ error: GPUError, _ detail: String) {
        self.error = error
        self.detail = detail
    }

    public static func unspec(_ detail: String) -> GPUFailure { GPUFailure(.unspec, detail) }
    public static func outOfMemory(_ detail: String) -> GPUFailure { GPUFailure(.outOfMemory, detail) }
    public static func invalidScanoutID(_ detail: String) -> GPUFailure { GPUFailure(.invalidScanoutID, detail) }
    public static func invalidResourceID(_ detail: String) -> GPUFailure { GPUFailure(.invalidResourceID, detail) }
    public static func invalidParameter(_ detail: String) -> GPUFailure { GPUFailure(.invalidParameter, detail) }
    public static func invalidContextID(_ detail: String) -> GPUFailure { GPUFailure(.invalidContextID, detail) }

    public var description: String { "\(error): \(detail)" }
}

import HostBuffers
import VirtioCore

/// One resource as `snapshot()` reports it (for the control socket and `vgpuctl`). Backing is
/// reported as a count and a byte total: guest addresses are never shown.
public struct ResourceInfo: Equatable, Sendable {
    public let id: ResourceID
    public let uuid: ResourceUUID?
    public let format: PixelFormat
    public let width: UInt32
    public let height: UInt32
    public let stride: Int
    public let hostBytes: Int
    public let backingEntryCount: Int
    public let backingBytes: UInt64
    /// What export hands out: kind, size, coherency (before ASSIGN_UUID: the host copy).
    public let hostBuffer: HostBufferInfo
    /// Scanouts showing this resource.
    public let scanouts: [UInt32]
    /// When RESOURCE_CREATE_2D made it: wall-clock seconds since the epoch (0 if unknown).
    public var createdAt: Double = 0
}

/// A guest-chosen resource handle (`resource_id`, virtio 1.2 section 5.7.6.8), scoped to one device.
///
/// Guest resource namespace (design notes, section 3): names a resource inside one device. Across
/// devices a resource is named by its `ResourceUUID` only. 0 is reserved and means "no resource".
public struct ResourceID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt32

    @inlinable public init(_ raw: UInt32) { self.raw = raw }

    /// `resource_id` 0: "no resource" (SET_SCANOUT disables, UPDATE_CURSOR hides).
    public static let none = ResourceID(0)
    public var isNone: Bool { raw == 0 }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.raw < rhs.raw }
    public var description: String { "res:\(raw)" }
}

/// Which device a resource belongs to, among every device this backend process serves.
/// Chosen by whoever creates the `GPUCommandProcessor` (one per vhost-user connection).
public struct GPUDeviceID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt32

    @inlinable public init(_ raw: UInt32) { self.raw = raw }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.raw < rhs.raw }
    public var description: String { "gpu:\(raw)" }
}

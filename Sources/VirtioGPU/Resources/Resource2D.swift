import DisplayChannel

/// A 2D resource: guest-chosen id, format and size, the host copy of its pixels, and (once
/// attached) the guest pages it is transferred from.
public struct Resource2D: Sendable {
    public let id: ResourceID
    public let format: PixelFormat
    public let width: UInt32
    public let height: UInt32
    /// Bytes per row of the host copy: `width * 4`.
    public let stride: Int
    /// Host buffer namespace: the host copy (a memfd; a dma-heap or DRM dumb dmabuf once
    /// exported as one).
    public internal(set) var storage: HostPixelStorage
    /// The buffer export hands out, chosen at the first RESOURCE_ASSIGN_UUID.
    var export: ResourceExport?
    /// Guest DMA namespace: where TRANSFER_TO_HOST_2D reads from; nil until ATTACH_BACKING.
    public var backing: BackingStore?

    public init(id: ResourceID, format: PixelFormat, width: UInt32, height: UInt32, stride: Int, storage: HostPixelStorage) {
        self.id = id
        self.format = format
        self.width = width
        self.height = height
        self.stride = stride
        self.storage = storage
    }

    /// Host bytes of a `width`×`height` 32-bit resource, or nil if it overflows.
    public static func byteCount(width: UInt32, height: UInt32) -> UInt64? {
        let (pixels, o1) = UInt64(width).multipliedReportingOverflow(by: UInt64(height))
        let (bytes, o2) = pixels.multipliedReportingOverflow(by: UInt64(PixelFormat.bytesPerPixel))
        return o1 || o2 ? nil : bytes
    }
}

extension PixelRect {
    /// True if the rectangle lies within a `width`×`height` area (empty rectangles included).
    /// Overflow-free: no `x + width` is ever computed.
    public func lies(within width: UInt32, _ height: UInt32) -> Bool {
        x <= width && self.width <= width - x && y <= height && self.height <= height - y
    }

    public var isEmpty: Bool { width == 0 || height == 0 }

    /// The overlap of two rectangles that each lie within a 2^32 area; nil if they do not overlap.
    public func intersection(_ other: PixelRect) -> PixelRect? {
        let x0 = max(UInt64(x), UInt64(other.x))
        let y0 = max(UInt64(y), UInt64(other.y))
        let x1 = min(UInt64(x) + UInt64(width), UInt64(other.x) + UInt64(other.width))
        let y1 = min(UInt64(y) + UInt64(height), UInt64(other.y) + UInt64(other.height))
        guard x1 > x0, y1 > y0 else { return nil }
        return PixelRect(x: UInt32(x0), y: UInt32(y0), width: UInt32(x1 - x0), height: UInt32(y1 - y0))
    }
}

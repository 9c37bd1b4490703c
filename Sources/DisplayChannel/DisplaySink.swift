/// A rectangle in scanout or resource pixel coordinates.
public struct PixelRect: Equatable, Sendable, CustomStringConvertible {
    public var x: UInt32, y: UInt32, width: UInt32, height: UInt32
    public init(x: UInt32, y: UInt32, width: UInt32, height: UInt32) {
        self.x = x; self.y = y; self.width = width; self.height = height
    }
    public var description: String { "\(width)x\(height)+\(x)+\(y)" }
}

/// One head as the display reports it (virtio_gpu_display_one).
public struct DisplayMode: Equatable, Sendable {
    public var rect: PixelRect
    public var enabled: Bool
    public var flags: UInt32
    public init(rect: PixelRect, enabled: Bool, flags: UInt32 = 0) {
        self.rect = rect; self.enabled = enabled; self.flags = flags
    }
}

/// Where the device's scanouts and cursor go: QEMU's display over the vhost-user-gpu socket
/// (`VhostUserGPUDisplay`), nothing (`NullDisplay`), or a recorder in tests.
///
/// Called from queue worker threads. Implementations must never block indefinitely: a display
/// peer that stops reading must not wedge the device (see `interrupt()`).
public protocol DisplaySink: AnyObject, Sendable {
    /// The display's view of its heads (GET_DISPLAY_INFO), or nil if it cannot say.
    func displayInfo() -> [DisplayMode]?
    /// The display's EDID blob for a head, or nil if it has none (the device then makes one).
    func edid(scanout: UInt32) -> [UInt8]?
    /// Scanout `id` now shows a `width`×`height` surface; 0×0 disables it.
    func setScanout(_ id: UInt32, width: UInt32, height: UInt32)
    /// Pixels for `rect` of scanout `id`, as XRGB8888 (bytes B,G,R,X). `pixels` points at the
    /// rect's first pixel; rows are `stride` bytes apart. The sink must not keep the pointer.
    func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int)
    /// A new 64×64 XRGB/ARGB cursor image (`pixels`, 64*64*4 bytes) with its hot spot, at (x, y).
    func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: UnsafeRawPointer)
    func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32)
    func cursorHide(scanout id: UInt32)
}

/// A display that shows nothing: used before QEMU hands over the display socket.
public final class NullDisplay: DisplaySink {
    public init() {}
    public func displayInfo() -> [DisplayMode]? { nil }
    public func edid(scanout: UInt32) -> [UInt8]? { nil }
    public func setScanout(_ id: UInt32, width: UInt32, height: UInt32) {}
    public func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int) {}
    public func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: UnsafeRawPointer) {}
    public func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32) {}
    public func cursorHide(scanout id: UInt32) {}
}

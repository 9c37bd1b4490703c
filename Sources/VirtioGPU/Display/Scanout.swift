import DisplayChannel

/// What one head shows: a rectangle of a resource (SET_SCANOUT), or nothing.
public struct Scanout: Equatable, Sendable {
    /// The resource shown, or nil when disabled.
    public var resource: ResourceID?
    /// The part of the resource shown, in resource pixels; its size is the head's size.
    public var rect: PixelRect
    /// The display shows it from the resource's dmabuf (DMABUF_SCANOUT), not from pixel updates.
    public var viaDMABUF = false
    /// SET_SCANOUT announced the head but no pixels went out yet: the next flush of the
    /// resource, or the control queue going idle, sends the whole head (never only a rect).
    public var wholeFrameOwed = false

    public init(resource: ResourceID?, rect: PixelRect, viaDMABUF: Bool = false, wholeFrameOwed: Bool = false) {
        self.resource = resource
        self.rect = rect
        self.viaDMABUF = viaDMABUF
        self.wholeFrameOwed = wholeFrameOwed
    }

    public static let disabled = Scanout(resource: nil, rect: PixelRect(x: 0, y: 0, width: 0, height: 0))
}

/// The pixels a head shows, read from a 2D resource's host copy when the display mailbox sends
/// them (deferred updates): head rect (x, y) is resource pixel (x + origin.x, y + origin.y).
final class HostCopyPixelSource: MailboxPixelSource {
    let renderer: Renderer2D
    let resource: ResourceID
    let originX: UInt32, originY: UInt32

    init(renderer: Renderer2D, resource: ResourceID, originX: UInt32, originY: UInt32) {
        self.renderer = renderer
        self.resource = resource
        self.originX = originX
        self.originY = originY
    }

    func copy(_ rect: PixelRect, to destination: UnsafeMutableRawPointer, pitch: Int) -> Bool {
        let r = PixelRect(x: rect.x &+ originX, y: rect.y &+ originY, width: rect.width, height: rect.height)
        return renderer.copyScanoutPixels(resource, rect: r, to: destination, pitch: pitch)
    }
}

/// The device's heads (1...16). Touched by the control worker, reset and snapshots.
struct ScanoutTable {
    private(set) var scanouts: [Scanout]
    /// Per head, the pixel source its last deferred update used (reused while the head shows
    /// the same resource at the same origin, so flushes allocate nothing).
    var pixelSources: [HostCopyPixelSource?]

    init(count: Int) {
        scanouts = Array(repeating: .disabled, count: count)
        pixelSources = Array(repeating: nil, count: count)
    }

    var count: Int { scanouts.count }

    subscript(index: Int) -> Scanout {
        get { scanouts[index] }
        set { scanouts[index] = newValue }
    }
}

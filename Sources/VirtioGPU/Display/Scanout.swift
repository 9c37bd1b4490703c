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

/// The device's heads (1...16). Touched by the control worker, reset and snapshots.
struct ScanoutTable {
    private(set) var scanouts: [Scanout]

    init(count: Int) { scanouts = Array(repeating: .disabled, count: count) }

    var count: Int { scanouts.count }

    subscript(index: Int) -> Scanout {
        get { scanouts[index] }
        set { scanouts[index] = newValue }
    }
}

import DisplayChannel
import HostBuffers
import VirtioCore

/// Format and size of a resource, as the dispatcher needs them to check rectangles.
public struct ResourceGeometry: Equatable, Sendable {
    public let format: PixelFormat
    public let width: UInt32
    public let height: UInt32

    public init(format: PixelFormat, width: UInt32, height: UInt32) {
        self.format = format
        self.width = width
        self.height = height
    }
}

/// What a renderer reports about one resource (no guest addresses: counts and bytes only).
public struct RendererResourceInfo: Equatable, Sendable {
    public let id: ResourceID
    public let geometry: ResourceGeometry
    public let stride: Int
    public let hostBytes: Int
    public let backingEntryCount: Int
    public let backingBytes: UInt64
    /// What export hands out (before ASSIGN_UUID: the host copy).
    public let hostBuffer: HostBufferInfo

    public init(id: ResourceID, geometry: ResourceGeometry, stride: Int, hostBytes: Int, backingEntryCount: Int, backingBytes: UInt64,
                hostBuffer: HostBufferInfo) {
        self.hostBuffer = hostBuffer
        self.id = id
        self.geometry = geometry
        self.stride = stride
        self.hostBytes = hostBytes
        self.backingEntryCount = backingEntryCount
        self.backingBytes = backingBytes
    }
}

/// The seam between command dispatch and whatever holds resource pixels: `Renderer2D` (host
/// copies in memfds) now, a virgl renderer later, a recording renderer in dispatch tests.
///
/// The dispatcher decodes and checks what it can without resource state (ids, formats, sizes,
/// backing entries against guest RAM), then calls one method here. The renderer checks what
/// needs its state and throws a `GPUFailure` whose code goes back to the guest.
///
/// Threading: mutating calls come from the control-queue worker; `geometry`,
/// `copyCursorImage`, `resources` also from the cursor worker and the control socket.
public protocol GPURenderer: AnyObject, Sendable {
    /// Format and size of `id`, or nil if no such resource.
    func geometry(of id: ResourceID) -> ResourceGeometry?

    /// RESOURCE_CREATE_2D. `id` is non-zero, `width`/`height` non-zero (checked by dispatch).
    /// Throws `invalidResourceID` if `id` exists, `outOfMemory` past the caps or if allocation fails.
    func createResource2D(_ id: ResourceID, format: PixelFormat, width: UInt32, height: UInt32) throws(GPUFailure)

    /// RESOURCE_UNREF: drops the resource and its host copy. Throws `invalidResourceID`.
    func destroyResource(_ id: ResourceID) throws(GPUFailure)

    /// RESOURCE_ATTACH_BACKING with entries already checked against guest RAM.
    /// Throws `invalidResourceID`, or `unspec` if the resource already has backing.
    func attachBacking(_ id: ResourceID, _ backing: BackingStore) throws(GPUFailure)

    /// RESOURCE_ATTACH_BACKING with the memory map the entries were checked against (a renderer
    /// that hands guest pages on, like virgl, needs it). Default: `attachBacking(id, backing)`.
    func attachBacking(_ id: ResourceID, _ backing: BackingStore, memory: GuestMemory) throws(GPUFailure)

    /// RESOURCE_DETACH_BACKING. Throws `invalidResourceID`, or `unspec` without backing.
    func detachBacking(_ id: ResourceID) throws(GPUFailure)

    /// TRANSFER_TO_HOST_2D: for row h of `rect`, copies `rect.width * 4` bytes from backing offset
    /// `offset + stride * h` to host offset `(rect.y + h) * stride + rect.x * 4` (QEMU's rule).
    /// Throws `invalidResourceID`, `unspec` without backing, `invalidParameter` if the rectangle
    /// is not within the resource or the backing is too small.
    func transferToHost2D(_ id: ResourceID, rect: PixelRect, offset: UInt64, memory: GuestMemory) throws(GPUFailure)

    /// Calls `body` with the pixels of `rect` (within the resource) as XRGB8888: a pointer to the
    /// rectangle's first pixel and the row stride in bytes. The pointer is valid only during `body`.
    func withScanoutPixels(_ id: ResourceID, rect: PixelRect, _ body: (UnsafeRawPointer, Int) -> Void) throws(GPUFailure)

    /// Writes the 64×64 cursor image of `id` to `destination` (64*64*4 bytes) as ARGB8888
    /// (bytes B,G,R,A; alpha 0xff for formats without one). Throws `invalidResourceID`, or
    /// `invalidParameter` if the resource is not 64×64.
    func copyCursorImage(_ id: ResourceID, into destination: UnsafeMutableRawPointer) throws(GPUFailure)

    /// The host copy behind `id`, if the renderer keeps one (for tests and inspection).
    func hostStorage(of id: ResourceID) -> HostPixelStorage?

    /// RESOURCE_ASSIGN_UUID (the first one): gives `id` its host buffer for export, the best kind
    /// the host buffer allocator allows (zero copy over `memory`'s pages where the backing
    /// allows). Never fails the command: when nothing better can be had, the host copy is
    /// exported and the reason recorded. Returns nil for an unknown id.
    func exportResource(_ id: ResourceID, memory: GuestMemory) -> HostBufferInfo?

    /// The dmabuf host buffer `id` was exported as, if it has one (for dmabuf scanout), with how
    /// its pixels lie in it.
    func scanoutDMABuffer(_ id: ResourceID) -> ScanoutDMABuffer?

    /// A new fd of `id`'s host buffer for a consumer (the caller owns it), with what it is: the
    /// exported buffer once ASSIGN_UUID made one, else the host copy. Throws `invalidResourceID`.
    func openHostBuffer(_ id: ResourceID) throws(GPUFailure) -> (fd: Int32, info: HostBufferInfo)

    /// Every resource, sorted by id.
    func resources() -> [RendererResourceInfo]

    /// The backing entries of `id` (empty without backing), nil if no such resource.
    func backingEntries(of id: ResourceID) -> [BackingEntry]?

    /// Drops every resource (device reset).
    func reset()
}

extension GPURenderer {
    public func hostStorage(of id: ResourceID) -> HostPixelStorage? { nil }
    public func attachBacking(_ id: ResourceID, _ backing: BackingStore, memory: GuestMemory) throws(GPUFailure) {
        try attachBacking(id, backing)
    }
    public func exportResource(_ id: ResourceID, memory: GuestMemory) -> HostBufferInfo? { nil }
    public func scanoutDMABuffer(_ id: ResourceID) -> ScanoutDMABuffer? { nil }
    public func openHostBuffer(_ id: ResourceID) throws(GPUFailure) -> (fd: Int32, info: HostBufferInfo) {
        throw .invalidResourceID("\(id) has no host buffer")
    }
    public func backingEntries(of id: ResourceID) -> [BackingEntry]? { geometry(of: id) == nil ? nil : [] }
}

import CShims
import DisplayChannel
import Dispatch
import HostBuffers
import VhostUser
import VirglRenderer
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The virgl renderer behind the `GPURenderer3D` seam: every resource, 2D ones included, lives
/// in virglrenderer (GL textures on the render thread). Guest pages are handed to virglrenderer
/// as iovecs at ATTACH_BACKING; transfers, submits and fences run there.
///
/// The display gets pixels read back (`virgl_renderer_transfer_read_iov`) for each flush, in the
/// guest's row order; a resource exported by UUID gets a memfd shadow refreshed by readback at
/// export and at every flush (coherency "on-flush"), since virglrenderer cannot export a
/// dmabuf on a surfaceless EGL display.
///
/// Threading: virglrenderer calls run on the `VirglRenderer`'s one render thread (`sync`); the
/// table of resources here is behind a Mutex; fences are polled by a thread of their own while
/// any is pending.
public final class VirglGPURenderer: GPURenderer3D {
    let virgl: VirglRenderer
    public let limits: ResourceLimits
    public let capsets: [CapsetInfo]

    struct Record {
        var args: VirglResourceCreate3D
        /// The guest ranges handed to virglrenderer, and the memory map they were translated
        /// against (kept alive while virglrenderer holds pointers into it).
        var backing: BackingStore?
        var memory: GuestMemory?
        /// The readback shadow (32-bit formats only), made at export when the texture cannot be
        /// exported as a dmabuf.
        var shadow: HostPixelStorage?
        /// The texture as a dmabuf, where virglrenderer could export it.
        var texture: ScanoutDMABuffer?
        var exported: HostBufferInfo?
        /// Bytes counted against `limits.maxTotalBytes` for this resource: the texture's
        /// estimated size (`VirglResourceSize`) plus the export shadow, if any.
        var accountedBytes: UInt64 = 0
        var format: PixelFormat? { PixelFormat(wire: args.format) }
    }

    let table = Mutex<[ResourceID: Record]>([:])
    /// Sum of every record's `accountedBytes`. Only changed with `table` locked (lock order:
    /// table, then this), so a check and the insert that follows it cannot interleave.
    private let accounted = Mutex<UInt64>(0)
    private let scratch = Mutex(ScratchBuffer())
    private let fences = FencePoller()

    /// Starts virglrenderer (EGL on `renderNode`, or Mesa's surfaceless platform). Throws a
    /// `VirglError` whose description is one line when no GL can be had.
    /// Without `renderNode`, the first `/dev/dri/renderD*` is tried (GBM on a GPU); when it
    /// gives no GL, Mesa's surfaceless platform is used.
    public init(limits: ResourceLimits, renderNode: String? = nil, log: (@Sendable (String) -> Void)? = nil) throws(VirglError) {
        let virgl: VirglRenderer
        if let renderNode {
            virgl = try VirglRenderer(VirglRendererOptions(renderNode: renderNode, log: log))
        } else if let found = Self.firstRenderNode(), let onNode = try? VirglRenderer(VirglRendererOptions(renderNode: found, log: log)) {
            virgl = onNode
        } else {
            virgl = try VirglRenderer(VirglRendererOptions(renderNode: nil, log: log))
        }
        self.virgl = virgl
        self.limits = limits
        let infos = (try? virgl.sync { $0.capsets() }) ?? []
        capsets = infos.map { CapsetInfo(id: $0.id, maxVersion: $0.maxVersion, maxSize: $0.maxSize) }
        fences.start(virgl)
    }

    deinit { shutdown() }

    /// Stops the fence poller and virglrenderer (idempotent; also at deinit). Another
    /// `VirglGPURenderer` can start afterwards.
    public func shutdown() {
        fences.stop()
        virgl.shutdown()
    }

    /// The first DRM render node, if the host has one.
    static func firstRenderNode(in dri: String = "/dev/dri") -> String? {
        (try? HostBufferProbe.listDirectory(dri))?.filter { $0.hasPrefix("renderD") }.sorted().first.map { dri + "/" + $0 }
    }

    /// EGL platform in use: "gbm" (a render node) or "surfaceless".
    public var platform: String { virgl.platform }

    /// GL_RENDERER of the renderer in use (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)").
    public var glRenderer: String { virgl.glRenderer }

    // MARK: errors

    /// virglrenderer's refusals as the guest sees them.
    static func failure(_ e: any Error) -> GPUFailure {
        guard let e = e as? VirglError else { return .unspec("\(e)") }
        switch e {
        case .invalidContextID, .unknownContext, .contextExists: return .invalidContextID(e.description)
        case .invalidResourceID, .unknownResource, .resourceExists: return .invalidResourceID(e.description)
        case .unknownCapset, .unknownCapsetVersion, .outOfBounds, .commandStreamNotWordAligned,
             .resourceAlreadyAttached, .resourceNotAttached, .backingAlreadyAttached:
            return .invalidParameter(e.description)
        default: return .unspec(e.description)
        }
    }

    /// Runs `body` on the render thread; any error becomes the guest's `GPUFailure`.
    func onRenderThread<T>(_ body: (VirglRendererCore) throws -> T) throws(GPUFailure) -> T {
        do { return try virgl.sync(body) } catch { throw Self.failure(error) }
    }

    // MARK: 2D commands

    public func geometry(of id: ResourceID) -> ResourceGeometry? {
        // A 3D resource in a format 2D does not name still exists: it is reported as B8G8R8A8,
        // and the display paths refuse it (withScanoutPixels checks the real format).
        table.withLock { t in t[id].map { ResourceGeometry(format: $0.format ?? .b8g8r8a8, width: $0.args.width, height: $0.args.height) } }
    }

    public func createResource2D(_ id: ResourceID, format: PixelFormat, width: UInt32, height: UInt32) throws(GPUFailure) {
        // As QEMU: a 2D resource is a render-target texture, rows top down.
        let args = VirglResourceCreate3D(resourceID: id.raw, target: VirglTarget.texture2D, format: format.wireValue,
                                         bind: VirglBind.renderTarget, width: width, height: height,
                                         flags: UInt32(VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP))
        try create(id, args, bytes: Resource2D.byteCount(width: width, height: height) ?? .max)
    }

    private func create(_ id: ResourceID, _ args: VirglResourceCreate3D, bytes: UInt64) throws(GPUFailure) {
        try table.withLock { (t: inout [ResourceID: Record]) throws(GPUFailure) in
            guard t[id] == nil else { throw .invalidResourceID("\(id) already exists") }
            guard t.count < limits.maxResources else { throw .outOfMemory("resource count cap \(limits.maxResources) reached") }
            guard bytes <= limits.maxResourceBytes else {
                throw .outOfMemory("resource of \(bytes) bytes exceeds the per-resource cap of \(limits.maxResourceBytes)")
            }
            try reserve(bytes)
            do throws(GPUFailure) { try onRenderThread { try $0.createResource(args) } } catch {
                release(bytes)
                throw error
            }
            var record = Record(args: args)
            record.accountedBytes = bytes
            t[id] = record
        }
    }

    /// Counts `bytes` against the device's total cap (--max-resource-memory), or throws
    /// ERR_OUT_OF_MEMORY's failure. Called with `table` locked.
    func reserve(_ bytes: UInt64) throws(GPUFailure) {
        try accounted.withLock { (total: inout UInt64) throws(GPUFailure) in
            guard bytes <= limits.maxTotalBytes, total <= limits.maxTotalBytes - bytes else {
                throw .outOfMemory("\(bytes) bytes would pass the device cap of \(limits.maxTotalBytes) (in use: \(total))")
            }
            total += bytes
        }
    }

    func release(_ bytes: UInt64) { accounted.withLock { $0 -= min($0, bytes) } }

    /// Bytes counted against the total cap now (tests, inspection).
    public var accountedBytes: UInt64 { accounted.withLock { $0 } }

    public func destroyResource(_ id: ResourceID) throws(GPUFailure) {
        guard table.withLock({ $0[id] }) != nil else { throw .invalidResourceID("\(id) does not exist") }
        // The render thread detaches the iovecs first; only then may the record (which keeps
        // the guest memory map they point into alive) go.
        let destroyed = Result { () throws(GPUFailure) in try onRenderThread { try $0.destroyResource(id.raw) } }
        let removed = table.withLock { $0.removeValue(forKey: id) }
        if let removed { release(removed.accountedBytes) }
        withExtendedLifetime(removed) {}
        try destroyed.get()
    }

    public func attachBacking(_ id: ResourceID, _ backing: BackingStore) throws(GPUFailure) {
        throw .unspec("virgl needs the memory map to attach backing")
    }

    public func attachBacking(_ id: ResourceID, _ backing: BackingStore, memory: GuestMemory) throws(GPUFailure) {
        try table.withLock { (t: inout [ResourceID: Record]) throws(GPUFailure) in
            guard t[id] != nil else { throw .invalidResourceID("\(id) does not exist") }
            guard t[id]!.backing == nil else { throw .unspec("\(id) already has backing") }
            var spans: [UnsafeMutableRawBufferPointer] = []
            spans.reserveCapacity(backing.entries.count)
            for (i, e) in backing.entries.enumerated() {
                // Each entry must be one host mapping: virglrenderer reads it as one iovec.
                guard let p = try? memory.hostPointer(e.address, length: Int(e.length)) else {
                    throw .invalidParameter("backing entry \(i) spans guest RAM regions")
                }
                spans.append(UnsafeMutableRawBufferPointer(start: p, count: Int(e.length)))
            }
            try onRenderThread { try $0.attachBacking(id.raw, spans) }
            t[id]!.backing = backing
            t[id]!.memory = memory
        }
    }

    public func detachBacking(_ id: ResourceID) throws(GPUFailure) {
        try table.withLock { (t: inout [ResourceID: Record]) throws(GPUFailure) in
            guard t[id] != nil else { throw .invalidResourceID("\(id) does not exist") }
            guard t[id]!.backing != nil else { throw .unspec("\(id) has no backing") }
            try onRenderThread { try $0.detachBacking(id.raw) }
            t[id]!.backing = nil
            t[id]!.memory = nil
        }
    }

    public func transferToHost2D(_ id: ResourceID, rect r: PixelRect, offset: UInt64, memory: GuestMemory) throws(GPUFailure) {
        let found = table.withLock { $0[id] }
        guard let res = found else { throw .invalidResourceID("\(id) does not exist") }
        guard let backing = res.backing else { throw .unspec("\(id) has no backing") }
        guard r.lies(within: res.args.width, res.args.height) else {
            throw .invalidParameter("rect \(r) outside \(id) (\(res.args.width)x\(res.args.height))")
        }
        guard !r.isEmpty else { return }
        try backing.checkTransfer(of: r, offset: offset, stride: UInt64(res.args.width) * 4)
        let t = VirglTransfer(resourceID: id.raw, box: VirglBox(x: r.x, y: r.y, width: r.width, height: r.height), offset: offset)
        try onRenderThread { try $0.transferToHost(t) }
    }

    /// Reads `rect` back into the scratch buffer as XRGB8888 rows and hands them to `body`.
    public func withScanoutPixels(_ id: ResourceID, rect r: PixelRect, _ body: (UnsafeRawPointer, Int) -> Void) throws(GPUFailure) {
        let found = table.withLock { $0[id] }
        guard let res = found else { throw .invalidResourceID("\(id) does not exist") }
        guard let format = res.format, res.args.target == VirglTarget.texture2D else {
            throw .invalidParameter("\(id) (virgl format \(res.args.format)) cannot be shown")
        }
        guard r.lies(within: res.args.width, res.args.height), !r.isEmpty else { throw .invalidParameter("rect \(r) outside \(id)") }
        let rowBytes = Int(r.width) * 4
        let total = rowBytes * Int(r.height)
        // An exported resource's shadow follows every flush (its coherency rule): read the
        // whole resource back once, into the shadow, and copy the rect from there.
        if let shadow = res.shadow { refreshShadow(shadow, res) }
        try scratch.withLock { (s: inout ScratchBuffer) throws(GPUFailure) in
            guard let dst = s.reserve(total) else { throw .outOfMemory("readback buffer of \(total) bytes") }
            if let shadow = res.shadow {
                let stride = Int(res.args.width) * 4
                for row in 0..<Int(r.height) {
                    (dst + row * rowBytes).copyMemory(from: shadow.base + (Int(r.y) + row) * stride + Int(r.x) * 4, byteCount: rowBytes)
                }
            } else {
                let box = VirglBox(x: r.x, y: r.y, width: r.width, height: r.height)
                try onRenderThread { try $0.readPixels(id.raw, box: box, stride: rowBytes, into: UnsafeMutableRawBufferPointer(start: dst, count: total)) }
            }
            if !format.isDisplayNative {
                for row in 0..<Int(r.height) {
                    let p = dst + row * rowBytes
                    _ = vgpu_convert_to_xrgb8888(format.wireValue, p, p, Int(r.width))
                }
            }
            body(UnsafeRawPointer(dst), rowBytes)
        }
    }

    public func copyCursorImage(_ id: ResourceID, into destination: UnsafeMutableRawPointer) throws(GPUFailure) {
        try onRenderThread { core throws in try Self.readCursor(core, id, into: destination) }
    }

    /// Reads a 64×64 resource as ARGB8888 (bytes B,G,R,A) on the render thread.
    /// Runs on the render thread and checks the resource as the render thread knows it now
    /// (`core.resourceArgs`): a snapshot taken when the job was queued may be stale (the
    /// resource destroyed and re-created with another size since).
    static func readCursor(_ core: VirglRendererCore, _ id: ResourceID, into destination: UnsafeMutableRawPointer) throws {
        guard let args = core.resourceArgs(id.raw) else { throw VirglError.unknownResource(id.raw) }
        guard args.width == 64, args.height == 64, args.target == VirglTarget.texture2D, let format = PixelFormat(wire: args.format) else {
            throw VirglError.outOfBounds("cursor \(id) is \(args.width)x\(args.height) in virgl format \(args.format), not 64x64 32-bit")
        }
        try core.readPixels(id.raw, box: VirglBox(width: 64, height: 64), stride: 256,
                            into: UnsafeMutableRawBufferPointer(start: destination, count: CursorBuffer.byteCount))
        if format != .b8g8r8a8 {
            // 4096 pixels, cursor path only: reorder into B,G,R,A keeping alpha where there is one.
            let (b, g, r, a) = format.byteOffsets
            let d = destination.assumingMemoryBound(to: UInt8.self)
            for i in 0..<(64 * 64) {
                let p = d + i * 4
                let px = UnsafeRawPointer(p).loadUnaligned(as: UInt32.self)
                func byte(_ k: Int) -> UInt8 { UInt8(truncatingIfNeeded: px >> (8 * UInt32(k))) }
                p[0] = byte(b); p[1] = byte(g); p[2] = byte(r); p[3] = a.map(byte) ?? 0xFF
            }
        }
    }

    public func withCursorImageAsync(_ id: ResourceID, into destination: CursorBuffer,
                                     deliver: @escaping @Sendable (Result<Void, GPUFailure>) -> Void) {
        let queued = virgl.post { core in
            do {
                try Self.readCursor(core, id, into: destination.pixels)
                deliver(.success(()))
            } catch {
                deliver(.failure(Self.failure(error)))
            }
        }
        if !queued { deliver(.failure(.unspec("virgl renderer shut down"))) }
    }

    // MARK: inspection (export: VirglGPURenderer+Export.swift)

    public func hostStorage(of id: ResourceID) -> HostPixelStorage? { table.withLock { $0[id]?.shadow } }

    public func resources() -> [RendererResourceInfo] {
        table.withLock { t in
            t.keys.sorted().map { id in
                let r = t[id]!
                return RendererResourceInfo(
                    id: id, geometry: ResourceGeometry(format: r.format ?? .b8g8r8a8, width: r.args.width, height: r.args.height),
                    stride: Int(r.args.width) * 4, hostBytes: r.shadow?.buffer.size ?? 0,
                    backingEntryCount: r.backing?.entries.count ?? 0, backingBytes: r.backing?.totalLength ?? 0,
                    hostBuffer: r.exported ?? HostBufferInfo(kind: .memfd, size: 0, coherency: .onFlush, source: .hostCopy, exported: false))
            }
        }
    }

    public func backingEntries(of id: ResourceID) -> [BackingEntry]? {
        table.withLock { t in t[id].map { $0.backing?.entries ?? [] } }
    }

    public func reset() {
        fences.dropAll()
        // The records (and the guest memory maps their iovecs point into) outlive virglrenderer's
        // reset, which detaches those iovecs on the render thread.
        let dropped = table.withLock { t -> [ResourceID: Record] in
            defer { t.removeAll() }
            return t
        }
        try? virgl.sync { $0.reset() }
        accounted.withLock { $0 = 0 }
        withExtendedLifetime(dropped) {}
        scratch.withLock { $0.release() }
    }

    // MARK: 3D commands

    public func capset(id: UInt32, version: UInt32) throws(GPUFailure) -> [UInt8] {
        try onRenderThread { try $0.capset(id: id, version: version) }
    }

    public func createContext(_ id: UInt32, name: String, contextInit: UInt32) throws(GPUFailure) {
        guard id != 0 else { throw .invalidContextID("context id 0 is reserved") }
        // context_init's low byte is a capset id (CONTEXT_INIT, not offered): 0 means virgl.
        let capset = contextInit & 0xFF
        try onRenderThread { try $0.createContext(id, name: name, capsetID: capset == 0 ? nil : capset) }
    }

    public func destroyContext(_ id: UInt32) throws(GPUFailure) {
        try onRenderThread { try $0.destroyContext(id) }
    }

    public func attachResource(_ id: ResourceID, toContext context: UInt32) throws(GPUFailure) {
        guard table.withLock({ $0[id] }) != nil else { throw .invalidResourceID("\(id) does not exist") }
        try onRenderThread { try $0.attachResource(id.raw, toContext: context) }
    }

    public func detachResource(_ id: ResourceID, fromContext context: UInt32) throws(GPUFailure) {
        guard table.withLock({ $0[id] }) != nil else { throw .invalidResourceID("\(id) does not exist") }
        try onRenderThread { try $0.detachResource(id.raw, fromContext: context) }
    }

    public func createResource3D(_ c: virtio_gpu_resource_create_3d) throws(GPUFailure) {
        let id = ResourceID(c.resource_id)
        guard !id.isNone else { throw .invalidResourceID("resource id 0 is reserved") }
        guard c.width > 0, c.height > 0 else { throw .invalidParameter("size \(c.width)x\(c.height)") }
        let args = VirglResourceCreate3D(resourceID: c.resource_id, target: c.target, format: c.format, bind: c.bind,
                                         width: c.width, height: c.height, depth: c.depth, arraySize: c.array_size,
                                         lastLevel: c.last_level, sampleCount: c.nr_samples, flags: c.flags)
        // GL memory is virglrenderer's, but the guest's asking is ours to cap: the size the
        // host will need at most (every texel, mip level, layer and sample) counts against
        // the per-resource and total caps.
        try create(id, args, bytes: VirglResourceSize.bytes(args) ?? .max)
    }

    public func transferToHost3D(_ t: virtio_gpu_transfer_host_3d, context: UInt32) throws(GPUFailure) {
        try onRenderThread { try $0.transferToHost(Self.transfer(t, context: context)) }
    }

    public func transferFromHost3D(_ t: virtio_gpu_transfer_host_3d, context: UInt32) throws(GPUFailure) {
        try onRenderThread { try $0.transferFromHost(Self.transfer(t, context: context)) }
    }

    static func transfer(_ t: virtio_gpu_transfer_host_3d, context: UInt32) -> VirglTransfer {
        VirglTransfer(resourceID: t.resource_id, contextID: context, level: t.level, stride: t.stride, layerStride: t.layer_stride,
                      box: VirglBox(x: t.box.x, y: t.box.y, z: t.box.z, width: t.box.w, height: t.box.h, depth: t.box.d),
                      offset: t.offset)
    }

    public func submit3D(context: UInt32, commands: [UInt8]) throws(GPUFailure) {
        // GET_MEMORY_INFO writes 24 bytes through the named resource's first backing entry
        // unchecked inside virglrenderer (VirglStreamGuard.swift): refuse the stream unless
        // that entry exists and is long enough.
        let targets = commands.withUnsafeBytes { VirglStreamGuard.memoryInfoTargets($0) }
        for handle in targets {
            let firstEntry = table.withLock { $0[ResourceID(handle)]?.backing?.entries.first?.length }
            guard let firstEntry, firstEntry >= VirglStreamGuard.memoryInfoBytes else {
                throw .invalidParameter("GET_MEMORY_INFO on resource \(handle) without a first backing entry of \(VirglStreamGuard.memoryInfoBytes) bytes")
            }
        }
        try onRenderThread { core in try commands.withUnsafeBytes { try core.submit(context: context, commands: $0) } }
    }

    public func drainFences(timeout: Double) {
        let deadline = monotonicSeconds() + max(0, timeout)
        while fences.pendingCount > 0, monotonicSeconds() < deadline { usleep(1000) }
    }

    public func createFence(_ fenceID: UInt64, context: UInt32, completed: @escaping @Sendable () -> Void) throws(GPUFailure) {
        // Registered before virglrenderer can retire it: the poller matches completions in order.
        fences.expect(fenceID, context: context, completed)
        do { try virgl.sync { try $0.createFence(fenceID, context: context) } } catch {
            fences.cancelLast()
            throw Self.failure(error)
        }
    }
}

import CVirglGlue
import CVirglRenderer
#if canImport(Glibc)
import Glibc
#endif

/// The renderer's state and every call into virglrenderer. Exists only on the render thread:
/// reach it through `VirglRenderer.sync`, `run` or `post`; it is not Sendable, so it cannot leak.
///
/// Everything the guest can choose (ids, boxes, capsets, command bytes) is checked here before
/// virglrenderer sees it, and virglrenderer's own refusals come back as `VirglError`.
public final class VirglRendererCore {
    private struct Resource {
        let args: VirglResourceCreate3D
        /// The iovec array virglrenderer holds while backing is attached (it keeps the pointer).
        var backing: UnsafeMutableBufferPointer<iovec>?
        var contexts: Set<UInt32> = []
    }

    private var egl: OpaquePointer?
    private let fences = FenceTracker()
    private var contexts: [UInt32: Set<UInt32>] = [:]   // context -> attached resources
    private var resources: [UInt32: Resource] = [:]

    /// virglrenderer's fence eventfd (VIRGL_RENDERER_THREAD_SYNC: its sync thread waits for the
    /// GL fences and makes this readable when one retires; `pollFences` then collects them), or
    /// -1 when virglrenderer runs without its sync thread (fences must then be polled).
    /// Owned by virglrenderer: never closed or read here.
    public let fencePollFD: Int32

    /// GL_RENDERER and GL_VERSION of the EGL display, and its platform ("surfaceless", "gbm").
    public let glRenderer: String
    public let glVersion: String
    public let platform: String

    init(renderNode: String?) throws(VirglError) {
        var reason = [CChar](repeating: 0, count: 256)
        let display: OpaquePointer? = reason.withUnsafeMutableBufferPointer { err in
            if let renderNode {
                return renderNode.withCString { vgpu_egl_open($0, err.baseAddress, err.count) }
            }
            return vgpu_egl_open(nil, err.baseAddress, err.count)
        }
        guard let display else { throw .noGL(stringFromCBuffer(reason)) }
        egl = display
        glRenderer = String(cString: vgpu_egl_gl_renderer(display))
        glVersion = String(cString: vgpu_egl_gl_version(display))
        platform = String(cString: vgpu_egl_platform(display))

        // The owner pointer stays valid: `fences` lives as long as this core, and the core
        // calls vgpu_virgl_cleanup before it goes.
        let owner = Unmanaged.passUnretained(fences).toOpaque()
        // VIRGL_RENDERER_THREAD_SYNC: virglrenderer's own thread waits for each fence's GL sync
        // and signals an eventfd, so fences need no polling. VGPU_VIRGL_POLL_FENCES=1 turns it
        // off (the 1 ms polling fallback, for comparisons).
        let threadSync = getenv("VGPU_VIRGL_POLL_FENCES").map { String(cString: $0) != "1" } ?? true
        let rc = vgpu_virgl_init(display, threadSync ? Int32(VIRGL_RENDERER_THREAD_SYNC) : 0, { owner, fence in
            Unmanaged<FenceTracker>.fromOpaque(owner!).takeUnretainedValue().retired(upTo: fence)
        }, owner)
        guard rc == 0 else {
            vgpu_egl_close(display)
            egl = nil
            fencePollFD = -1
            throw .initFailed(rc)
        }
        fencePollFD = threadSync ? virgl_renderer_get_poll_fd() : -1
    }

    /// Drops every resource and context, cleans virglrenderer up and closes EGL. Last call.
    func tearDown() {
        guard let display = egl else { return }
        for id in resources.keys.sorted() { try? destroyResource(id) }
        for id in contexts.keys.sorted() { try? destroyContext(id) }
        vgpu_virgl_cleanup()
        vgpu_egl_close(display)
        egl = nil
    }

    // MARK: capsets

    /// GET_CAPSET_INFO for a capset id. Throws `unknownCapset` for ids other than VIRGL and
    /// VIRGL2, or one virglrenderer reports no caps for.
    public func capsetInfo(id: UInt32) throws(VirglError) -> VirglCapsetInfo {
        guard VirglCapset(rawValue: id) != nil else { throw .unknownCapset(id) }
        var maxVersion: UInt32 = 0, maxSize: UInt32 = 0
        virgl_renderer_get_cap_set(id, &maxVersion, &maxSize)
        guard maxSize > 0 else { throw .unknownCapset(id) }
        return VirglCapsetInfo(id: id, maxVersion: maxVersion, maxSize: maxSize)
    }

    /// The capsets with caps, in capset-index order (index 0 = VIRGL, 1 = VIRGL2).
    public func capsets() -> [VirglCapsetInfo] {
        VirglCapset.allCases.compactMap { try? capsetInfo(id: $0.rawValue) }
    }

    /// GET_CAPSET: the caps blob (`maxSize` bytes). Versions 0...maxVersion are accepted (Mesa
    /// asks for version 0 of VIRGL2); higher ones throw `unknownCapsetVersion`.
    public func capset(id: UInt32, version: UInt32) throws(VirglError) -> [UInt8] {
        let info = try capsetInfo(id: id)
        guard version <= info.maxVersion else { throw .unknownCapsetVersion(capset: id, version: version) }
        var caps = [UInt8](repeating: 0, count: Int(info.maxSize))
        caps.withUnsafeMutableBytes { virgl_renderer_fill_caps(id, version, $0.baseAddress) }
        return caps
    }

    // MARK: contexts

    /// CTX_CREATE. `capsetID` non-nil uses `context_create_with_flags` (CONTEXT_INIT).
    public func createContext(_ id: UInt32, name: String = "", capsetID: UInt32? = nil) throws(VirglError) {
        guard id != 0, id <= UInt32(Int32.max) else { throw .invalidContextID(id) }
        guard contexts[id] == nil else { throw .contextExists(id) }
        var name = Array(name.utf8.prefix(64)).map { CChar(bitPattern: $0) }
        let rc = name.withUnsafeMutableBufferPointer { buf in
            if let capsetID {
                return virgl_renderer_context_create_with_flags(id, capsetID & 0xff, UInt32(buf.count), buf.baseAddress)
            }
            return virgl_renderer_context_create(id, UInt32(buf.count), buf.baseAddress)
        }
        guard rc == 0 else { throw .rendererFailed(call: "virgl_renderer_context_create", code: rc) }
        contexts[id] = []
    }

    /// CTX_DESTROY. Resources attached to it stay (they are the device's, not the context's).
    public func destroyContext(_ id: UInt32) throws(VirglError) {
        guard let attached = contexts.removeValue(forKey: id) else { throw .unknownContext(id) }
        for resource in attached { resources[resource]?.contexts.remove(id) }
        virgl_renderer_context_destroy(id)
    }

    public var contextIDs: [UInt32] { contexts.keys.sorted() }

    /// CTX_ATTACH_RESOURCE. Attaching twice throws `resourceAlreadyAttached`.
    public func attachResource(_ resourceID: UInt32, toContext contextID: UInt32) throws(VirglError) {
        guard contexts[contextID] != nil else { throw .unknownContext(contextID) }
        guard resources[resourceID] != nil else { throw .unknownResource(resourceID) }
        guard !contexts[contextID]!.contains(resourceID) else {
            throw .resourceAlreadyAttached(resource: resourceID, context: contextID)
        }
        virgl_renderer_ctx_attach_resource(Int32(contextID), Int32(resourceID))
        contexts[contextID]!.insert(resourceID)
        resources[resourceID]!.contexts.insert(contextID)
    }

    /// CTX_DETACH_RESOURCE.
    public func detachResource(_ resourceID: UInt32, fromContext contextID: UInt32) throws(VirglError) {
        guard contexts[contextID] != nil else { throw .unknownContext(contextID) }
        guard resources[resourceID] != nil else { throw .unknownResource(resourceID) }
        guard contexts[contextID]!.remove(resourceID) != nil else {
            throw .resourceNotAttached(resource: resourceID, context: contextID)
        }
        resources[resourceID]!.contexts.remove(contextID)
        virgl_renderer_ctx_detach_resource(Int32(contextID), Int32(resourceID))
    }

    // MARK: resources

    /// RESOURCE_CREATE_3D (no backing yet; see `attachBacking`).
    public func createResource(_ args: VirglResourceCreate3D) throws(VirglError) {
        let id = args.resourceID
        guard id != 0, id <= UInt32(Int32.max) else { throw .invalidResourceID(id) }
        guard resources[id] == nil else { throw .resourceExists(id) }
        var cArgs = virgl_renderer_resource_create_args(
            handle: id, target: args.target, format: args.format, bind: args.bind,
            width: args.width, height: args.height, depth: args.depth, array_size: args.arraySize,
            last_level: args.lastLevel, nr_samples: args.sampleCount, flags: args.flags)
        let rc = virgl_renderer_resource_create(&cArgs, nil, 0)
        guard rc == 0 else { throw .rendererFailed(call: "virgl_renderer_resource_create", code: rc) }
        resources[id] = Resource(args: args)
    }

    /// RESOURCE_UNREF: detaches backing and contexts, then drops the resource.
    public func destroyResource(_ id: UInt32) throws(VirglError) {
        guard let resource = resources[id] else { throw .unknownResource(id) }
        for context in resource.contexts {
            contexts[context]?.remove(id)
            virgl_renderer_ctx_detach_resource(Int32(context), Int32(id))
        }
        if resource.backing != nil { try detachBacking(id) }
        virgl_renderer_resource_unref(id)
        resources[id] = nil
    }

    public var resourceIDs: [UInt32] { resources.keys.sorted() }

    /// The creation arguments of `id`, nil if no such resource.
    public func resourceArgs(_ id: UInt32) -> VirglResourceCreate3D? { resources[id]?.args }

    /// RESOURCE_ATTACH_BACKING over host memory (guest pages already mapped by the caller).
    /// virglrenderer reads and writes these spans on transfers until `detachBacking` or
    /// `destroyResource`: the caller keeps them mapped until then.
    public func attachBacking(_ id: UInt32, _ spans: [UnsafeMutableRawBufferPointer]) throws(VirglError) {
        guard resources[id] != nil else { throw .unknownResource(id) }
        guard resources[id]!.backing == nil else { throw .backingAlreadyAttached(id) }
        let iovs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: max(spans.count, 1))
        for (i, span) in spans.enumerated() {
            iovs[i] = iovec(iov_base: span.baseAddress, iov_len: span.count)
        }
        let rc = virgl_renderer_resource_attach_iov(Int32(id), iovs.baseAddress, Int32(spans.count))
        guard rc == 0 else {
            iovs.deallocate()
            throw .rendererFailed(call: "virgl_renderer_resource_attach_iov", code: rc)
        }
        resources[id]!.backing = iovs
    }

    /// RESOURCE_DETACH_BACKING.
    public func detachBacking(_ id: UInt32) throws(VirglError) {
        guard resources[id] != nil else { throw .unknownResource(id) }
        guard let iovs = resources[id]!.backing else { throw .noBacking(id) }
        var returned: UnsafeMutablePointer<iovec>? = nil
        var count: Int32 = 0
        virgl_renderer_resource_detach_iov(Int32(id), &returned, &count)
        iovs.deallocate()   // ours: virglrenderer only borrowed it
        resources[id]!.backing = nil
    }

    /// Format, size, stride and GL texture of `id`.
    public func resourceInfo(_ id: UInt32) throws(VirglError) -> VirglResourceInfo {
        guard resources[id] != nil else { throw .unknownResource(id) }
        var info = virgl_renderer_resource_info()
        let rc = virgl_renderer_resource_get_info(Int32(id), &info)
        guard rc == 0 else { throw .rendererFailed(call: "virgl_renderer_resource_get_info", code: rc) }
        return VirglResourceInfo(resourceID: id, format: info.virgl_format, width: info.width,
                                 height: info.height, depth: info.depth, flags: info.flags,
                                 textureID: info.tex_id, stride: info.stride, drmFourcc: info.drm_fourcc)
    }

    /// A dmabuf of the resource's texture, through this backend's EGL display
    /// (EGL_MESA_image_dma_buf_export). Throws `exportUnavailable` where the display cannot make
    /// one (surfaceless Mesa without a DRM device, for one).
    public func exportResource(_ id: UInt32) throws(VirglError) -> VirglDMABuf {
        guard let display = egl else { throw .shutDown }
        let info = try resourceInfo(id)
        guard info.textureID != 0 else { throw .exportUnavailable(resource: id, reason: "not a texture") }
        // The texture belongs to virglrenderer's share group: make its context 0 current.
        virgl_renderer_force_ctx_0()
        var plane = vgpu_dmabuf_plane(fd: -1, stride: 0, offset: 0, fourcc: 0, modifier: 0)
        var reason = [CChar](repeating: 0, count: 256)
        let rc = reason.withUnsafeMutableBufferPointer {
            vgpu_egl_export_texture(display, info.textureID, &plane, $0.baseAddress, $0.count)
        }
        guard rc == 0 else { throw .exportUnavailable(resource: id, reason: stringFromCBuffer(reason)) }
        return VirglDMABuf(fd: plane.fd, yZeroTop: info.isYZeroTop, stride: plane.stride, offset: plane.offset,
                           fourcc: UInt32(bitPattern: plane.fourcc), modifier: plane.modifier)
    }

    // MARK: transfers

    /// TRANSFER_TO_HOST_3D: the box from the attached backing into the resource.
    public func transferToHost(_ t: VirglTransfer) throws(VirglError) {
        try checkTransfer(t)
        var box = cBox(t.box)
        let rc = withUnsafeMutablePointer(to: &box) { box in
            virgl_renderer_transfer_write_iov(t.resourceID, t.contextID, Int32(t.level), t.stride, t.layerStride,
                                              OpaquePointer(box), t.offset, nil, 0)
        }
        guard rc == 0 else { throw .rendererFailed(call: "virgl_renderer_transfer_write_iov", code: rc) }
    }

    /// TRANSFER_FROM_HOST_3D: the box from the resource into the attached backing.
    public func transferFromHost(_ t: VirglTransfer) throws(VirglError) {
        try checkTransfer(t)
        var box = cBox(t.box)
        let rc = withUnsafeMutablePointer(to: &box) { box in
            virgl_renderer_transfer_read_iov(t.resourceID, t.contextID, t.level, t.stride, t.layerStride,
                                             OpaquePointer(box), t.offset, nil, 0)
        }
        guard rc == 0 else { throw .rendererFailed(call: "virgl_renderer_transfer_read_iov", code: rc) }
    }

    /// Reads `box` of level `level` into host memory `destination`, rows `stride` bytes apart
    /// (0: tight rows, for the 32-bit formats `VirglFormat` names). For readback to a scanout,
    /// a PNG or a memfd shadow; no backing needed.
    public func readPixels(_ id: UInt32, level: UInt32 = 0, box: VirglBox, stride: Int = 0,
                           into destination: UnsafeMutableRawBufferPointer) throws(VirglError) {
        guard let resource = resources[id] else { throw .unknownResource(id) }
        try checkBox(box, level: level, of: resource.args)
        var rowStride = stride
        if rowStride == 0 {
            guard let bpp = VirglFormat.bytesPerPixel(resource.args.format) else {
                throw .outOfBounds("a stride is needed for format \(resource.args.format)")
            }
            rowStride = Int(box.width) * bpp
        }
        let needed = UInt64(rowStride) * UInt64(box.height) * UInt64(max(box.depth, 1))
        guard rowStride >= 0, needed <= UInt64(destination.count), rowStride <= Int(UInt32.max) else {
            throw .outOfBounds("\(needed) bytes for box \(box) but the buffer holds \(destination.count)")
        }
        var iov = iovec(iov_base: destination.baseAddress, iov_len: destination.count)
        var cbox = cBox(box)
        let rc = withUnsafeMutablePointer(to: &cbox) { box in
            virgl_renderer_transfer_read_iov(id, 0, level, UInt32(rowStride), 0, OpaquePointer(box), 0, &iov, 1)
        }
        guard rc == 0 else { throw .rendererFailed(call: "virgl_renderer_transfer_read_iov", code: rc) }
    }

    private func checkTransfer(_ t: VirglTransfer) throws(VirglError) {
        guard let resource = resources[t.resourceID] else { throw .unknownResource(t.resourceID) }
        if t.contextID != 0, contexts[t.contextID] == nil { throw .unknownContext(t.contextID) }
        guard resource.backing != nil else { throw .noBacking(t.resourceID) }
        try checkBox(t.box, level: t.level, of: resource.args)
    }

    /// The box must lie within mip level `level` (virglrenderer checks too; a guest box never
    /// reaches it unchecked). Layers count as depth except for 3D textures.
    private func checkBox(_ box: VirglBox, level: UInt32, of args: VirglResourceCreate3D) throws(VirglError) {
        guard level <= args.lastLevel, level < 32 else {
            throw .outOfBounds("level \(level) of resource \(args.resourceID) (last level \(args.lastLevel))")
        }
        func minified(_ size: UInt32) -> UInt64 { UInt64(max(size >> level, 1)) }
        let width = minified(args.width)
        let height = args.target == VirglTarget.texture1DArray ? UInt64(args.arraySize) : minified(args.height)
        let depth = args.target == VirglTarget.texture3D ? minified(args.depth) : UInt64(max(args.arraySize, 1))
        guard UInt64(box.x) + UInt64(box.width) <= width,
              UInt64(box.y) + UInt64(box.height) <= height,
              UInt64(box.z) + UInt64(box.depth) <= depth else {
            throw .outOfBounds("box \(box.x),\(box.y),\(box.z) \(box.width)x\(box.height)x\(box.depth) in resource \(args.resourceID) level \(level) (\(width)x\(height)x\(depth))")
        }
    }

    private func cBox(_ box: VirglBox) -> vgpu_virgl_box {
        vgpu_virgl_box(x: box.x, y: box.y, z: box.z, w: box.width, h: box.height, d: box.depth)
    }

    // MARK: command submission

    /// SUBMIT_3D: a virgl command stream for context `contextID`. virglrenderer decodes it;
    /// a stream it refuses throws `rendererFailed` (and may leave the context unusable, as on
    /// QEMU: the guest then makes a new one). The renderer itself goes on.
    public func submit(context contextID: UInt32, commands: UnsafeRawBufferPointer) throws(VirglError) {
        guard contexts[contextID] != nil else { throw .unknownContext(contextID) }
        guard commands.count % 4 == 0 else { throw .commandStreamNotWordAligned(commands.count) }
        guard commands.count > 0 else { return }
        guard commands.count / 4 <= Int(Int32.max) else { throw .outOfBounds("command stream of \(commands.count) bytes") }
        // virglrenderer takes void * but only reads the stream.
        let rc = virgl_renderer_submit_cmd(UnsafeMutableRawPointer(mutating: commands.baseAddress!),
                                           Int32(contextID), Int32(commands.count / 4))
        guard rc == 0 else { throw .rendererFailed(call: "virgl_renderer_submit_cmd", code: rc) }
    }

    /// `submit` over an array of command words.
    public func submit(context contextID: UInt32, words: [UInt32]) throws(VirglError) {
        let outcome = words.withUnsafeBytes { bytes in
            Result { () throws(VirglError) in try submit(context: contextID, commands: bytes) }
        }
        try outcome.get()
    }

    // MARK: fences

    /// Queues a fence after everything submitted so far. It completes (in `pollFences`) after
    /// the fences created before it: fences complete in creation order.
    public func createFence(_ fenceID: UInt64, context contextID: UInt32) throws(VirglError) {
        let sequence = fences.enqueue(fenceID: fenceID, contextID: contextID)
        let rc = virgl_renderer_create_fence(Int32(bitPattern: sequence), contextID)
        guard rc == 0 else {
            fences.cancel(sequence)
            throw .rendererFailed(call: "virgl_renderer_create_fence", code: rc)
        }
    }

    /// Lets virglrenderer retire finished GPU work (`virgl_renderer_poll`) and returns the
    /// fences that completed since the last call, in creation order.
    public func pollFences() -> [VirglFenceCompletion] {
        virgl_renderer_poll()
        return fences.takeCompleted()
    }

    public var pendingFenceCount: Int { fences.pendingCount }

    // MARK: reset

    /// Device reset: every context and resource goes, pending fences are dropped.
    public func reset() {
        // Take the backing back first, as on unref: virglrenderer only borrows the iovecs.
        for id in resources.keys.sorted() where resources[id]!.backing != nil { try? detachBacking(id) }
        virgl_renderer_reset()
        resources.removeAll()
        contexts.removeAll()
        fences.removeAll()
    }
}

/// Fences in flight. virglrenderer takes a 32-bit id and may report only the newest retired
/// one, so each fence gets a sequence number and a report of `n` retires all fences up to `n`.
final class FenceTracker {
    private var pending: [(sequence: UInt32, completion: VirglFenceCompletion)] = []
    private var completed: [VirglFenceCompletion] = []
    private var lastSequence: UInt32 = 0

    var pendingCount: Int { pending.count }

    func enqueue(fenceID: UInt64, contextID: UInt32) -> UInt32 {
        lastSequence &+= 1
        if lastSequence == 0 { lastSequence = 1 }   // 0 is never handed out
        pending.append((lastSequence, VirglFenceCompletion(fenceID: fenceID, contextID: contextID)))
        return lastSequence
    }

    func cancel(_ sequence: UInt32) {
        pending.removeAll { $0.sequence == sequence }
    }

    /// Called from virglrenderer's write_fence callback (on the render thread).
    func retired(upTo sequence: UInt32) {
        // Wrapping comparison: sequence numbers are in flight far fewer than 2^31 apart.
        var count = 0
        while count < pending.count, Int32(bitPattern: sequence &- pending[count].sequence) >= 0 {
            count += 1
        }
        completed.append(contentsOf: pending.prefix(count).map(\.completion))
        pending.removeFirst(count)
    }

    func takeCompleted() -> [VirglFenceCompletion] {
        defer { completed.removeAll(keepingCapacity: true) }
        return completed
    }

    func removeAll() {
        pending.removeAll()
        completed.removeAll()
    }
}

/// The NUL-terminated text in a C message buffer.
private func stringFromCBuffer(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}

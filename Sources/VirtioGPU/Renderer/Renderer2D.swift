import CShims
import DisplayChannel
import HostBuffers
import SystemSupport
import VirtioCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The 2D renderer: each resource has a host copy in a memfd (`HostPixelStorage`), filled from
/// guest pages by TRANSFER_TO_HOST_2D with row `memcpy`s and shown by handing the display a
/// pointer into it (B8G8R8A8/X8) or rows converted into a reusable scratch buffer (other formats).
///
/// Hot paths (transfer, flush) allocate nothing per command.
public final class Renderer2D: GPURenderer {
    let table: Mutex<ResourceTable>
    /// Conversion buffer for flushes of non-native formats: allocated once, grown, never per command.
    private let scratch = Mutex(ScratchBuffer())
    /// Makes the host buffers resources are exported as (shared by every device of the process).
    public let hostBuffers: HostBufferAllocator
    /// Host copies of small resources that were never exported nor handed out, kept after
    /// UNREF (zeroed) for the next CREATE_2D of the same page-rounded size: a create + unref
    /// then costs no memfd_create/ftruncate/mmap/munmap/close (munmap in a threaded process
    /// also costs TLB shootdowns). At most `spareCount` of at most `spareMaxBytes` each.
    private let spares = Mutex<[Int: [HostPixelStorage]]>([:])
    static let spareMaxBytes = 64 << 10
    static let spareCount = 32

    public init(limits: ResourceLimits, hostBuffers: HostBufferAllocator = .memfdOnly) {
        self.table = Mutex(ResourceTable(limits: limits))
        self.hostBuffers = hostBuffers
    }

    public func geometry(of id: ResourceID) -> ResourceGeometry? {
        table.withLock { t in t[id].map { ResourceGeometry(format: $0.format, width: $0.width, height: $0.height) } }
    }

    public func createResource2D(_ id: ResourceID, format: PixelFormat, width: UInt32, height: UInt32) throws(GPUFailure) {
        guard let bytes = Resource2D.byteCount(width: width, height: height) else {
            throw .outOfMemory("\(width)x\(height) overflows")
        }
        try table.withLock { (t: inout ResourceTable) throws(GPUFailure) in
            guard t[id] == nil else { throw .invalidResourceID("\(id) already exists") }
            try t.checkCapacity(bytes: bytes)
            // bytes <= maxResourceBytes, checked above, so it fits an Int.
            guard let length = Int(exactly: bytes) else { throw .outOfMemory("\(bytes) bytes") }
            let storage: HostPixelStorage
            do { storage = try takeSpare(length: length) ?? HostPixelStorage(length: length, name: "vgpu:\(id.raw)") }
            catch { throw .outOfMemory("host copy of \(id) (\(bytes) bytes): \(error)") }
            let stride = Int(width) * PixelFormat.bytesPerPixel
            t.insert(Resource2D(id: id, format: format, width: width, height: height, stride: stride, storage: storage))
        }
    }

    public func destroyResource(_ id: ResourceID) throws(GPUFailure) {
        // The storage is released after the lock: munmap/close are not done under it.
        guard var r = table.withLock({ $0.remove(id) }) else { throw .invalidResourceID("\(id) does not exist") }
        keepSpare(&r)
    }

    private static func pageRounded(_ length: Int) -> Int { (length + pageSize - 1) / pageSize * pageSize }

    /// A zeroed spare host copy of `length`'s page-rounded size, if one is kept.
    private func takeSpare(length: Int) throws(HostBufferError) -> HostPixelStorage? {
        let size = Self.pageRounded(length)
        guard size <= Self.spareMaxBytes else { return nil }
        guard let spare = spares.withLock({ $0[size]?.popLast() }) else { return nil }
        return try HostPixelStorage(buffer: spare.buffer, length: length)
    }

    /// Keeps `r`'s host copy for reuse when nothing outside this table can see it: no export,
    /// no fd handed out, a plain memfd, small, and no other reference (a display or test).
    private func keepSpare(_ r: inout Resource2D) {
        guard r.export == nil, r.storage.buffer.kind == .memfd, r.storage.buffer.size <= Self.spareMaxBytes,
              !r.storage.handedOut.load(ordering: .acquiring), isKnownUniquelyReferenced(&r.storage),
              let base = r.storage.buffer.base else { return }
        let size = r.storage.buffer.size
        // Safety: the mapping is `size` bytes, and no one else references it.
        memset(base, 0, size)
        let storage = r.storage
        spares.withLock { s in
            guard s.values.reduce(0, { $0 + $1.count }) < Self.spareCount else { return }
            s[size, default: []].append(storage)
        }
    }

    public func attachBacking(_ id: ResourceID, _ backing: BackingStore) throws(GPUFailure) {
        try table.withLock { (t: inout ResourceTable) throws(GPUFailure) in
            guard let r = t[id] else { throw .invalidResourceID("\(id) does not exist") }
            // QEMU: ERR_UNSPEC when the resource already has backing.
            guard r.backing == nil else { throw .unspec("\(id) already has backing") }
            t.setBacking(backing, for: id)
        }
    }

    public func detachBacking(_ id: ResourceID) throws(GPUFailure) {
        try table.withLock { (t: inout ResourceTable) throws(GPUFailure) in
            guard let r = t[id] else { throw .invalidResourceID("\(id) does not exist") }
            // QEMU (virtio_gpu_find_check_resource with require_backing): ERR_UNSPEC.
            guard r.backing != nil else { throw .unspec("\(id) has no backing") }
            t.setBacking(nil, for: id)
            // A zero-copy export maps the pages being detached: later consumers get a shadow.
            // Fds handed out earlier keep those pages (the kernel holds them), now the guest's again.
            if let e = r.export, e.info.source == .guestRAM, let res = t[id] {
                let (export, storage) = makeShadowExport(res, reason: "guest backing detached after export")
                t.setExport(export, storage: storage, for: id)
            }
        }
    }

    public func transferToHost2D(_ id: ResourceID, rect r: PixelRect, offset: UInt64, memory: GuestMemory) throws(GPUFailure) {
        // The copy runs under the table lock: the cursor worker never reads a half-written row.
        try table.withLock { (t: inout ResourceTable) throws(GPUFailure) in
            guard let res = t[id] else { throw .invalidResourceID("\(id) does not exist") }
            guard let backing = res.backing else { throw .unspec("\(id) has no backing") }
            guard r.lies(within: res.width, res.height) else {
                throw .invalidParameter("rect \(r) outside \(id) (\(res.width)x\(res.height))")
            }
            guard !r.isEmpty else { return }
            let stride = UInt64(res.stride)
            let rowBytes = UInt64(r.width) * 4              // ≤ stride: r.width ≤ res.width
            try backing.checkTransfer(of: r, offset: offset, stride: stride)
            var reader = BackingReader(backing, memory: memory)
            let base = res.storage.base
            // A dmabuf host copy (dma-heap, DRM dumb shadow) is written between SYNC_START/END.
            res.storage.buffer.beginCPUAccess(write: true)
            defer { res.storage.buffer.endCPUAccess(write: true) }
            // Destination offsets lie within the host copy: r is within the resource.
            let firstDst = Int(r.y) * res.stride + Int(r.x) * 4
            if r.x == 0 && r.width == res.width {
                // Full-width rows are contiguous on both sides: one copy (one memcpy per backing
                // entry crossed; a single memcpy when one entry holds it all).
                try reader.copy(from: offset, count: Int(stride) * Int(r.height), to: base + firstDst)
            } else {
                var src = offset
                var dst = firstDst
                for _ in 0..<r.height {
                    try reader.copy(from: src, count: Int(rowBytes), to: base + dst)
                    src &+= stride
                    dst &+= res.stride
                }
            }
        }
    }

    public func withScanoutPixels(_ id: ResourceID, rect r: PixelRect, _ body: (UnsafeRawPointer, Int) -> Void) throws(GPUFailure) {
        // Take a strong reference to the storage and release the lock: the display write can be
        // slow and must not hold up the cursor worker. Only the control worker writes pixels,
        // and it is the one running this.
        let found = table.withLock { t in t[id].map { ($0.storage, $0.format, $0.stride, $0.width, $0.height) } }
        guard let (storage, format, stride, width, height) = found else { throw .invalidResourceID("\(id) does not exist") }
        guard r.lies(within: width, height), !r.isEmpty else { throw .invalidParameter("rect \(r) outside \(id)") }
        // Safety: r lies within the resource, so every row read below is inside the mapping.
        let first = UnsafeRawPointer(storage.base + Int(r.y) * stride + Int(r.x) * 4)
        storage.buffer.beginCPUAccess(write: false)   // nothing for a memfd host copy
        defer { storage.buffer.endCPUAccess(write: false) }
        if format.isDisplayNative {
            withExtendedLifetime(storage) { body(first, stride) }
            return
        }
        let rowBytes = Int(r.width) * 4
        let total = rowBytes * Int(r.height)
        try scratch.withLock { (s: inout ScratchBuffer) throws(GPUFailure) in
            guard let dst = s.reserve(total) else { throw .outOfMemory("conversion buffer of \(total) bytes") }
            withExtendedLifetime(storage) {
                for row in 0..<Int(r.height) {
                    _ = vgpu_convert_to_xrgb8888(format.wireValue, dst + row * rowBytes, first + row * stride, Int(r.width))
                }
                body(UnsafeRawPointer(dst), rowBytes)
            }
        }
    }

    /// Copies `rect` of the host copy as XRGB8888 to `destination` (the rect's first pixel, rows
    /// `pitch` apart) under the table lock, which every transfer holds for its whole copy: the
    /// pixels are those of one moment between transfers, never half of one. False when the
    /// resource is gone or the rect does not lie within it. For the display mailbox's sender.
    public func copyScanoutPixels(_ id: ResourceID, rect r: PixelRect, to destination: UnsafeMutableRawPointer, pitch: Int) -> Bool {
        table.withLock { t in
            guard let res = t[id], r.lies(within: res.width, res.height), !r.isEmpty, pitch >= Int(r.width) * 4 else { return false }
            // Safety: r lies within the resource, so every row read is inside the mapping; the
            // caller provides r.height rows of pitch bytes at destination.
            let first = UnsafeRawPointer(res.storage.base + Int(r.y) * res.stride + Int(r.x) * 4)
            let rowBytes = Int(r.width) * 4
            res.storage.buffer.beginCPUAccess(write: false)
            defer { res.storage.buffer.endCPUAccess(write: false) }
            if res.format.isDisplayNative {
                if pitch == rowBytes && res.stride == rowBytes {
                    destination.copyMemory(from: first, byteCount: rowBytes * Int(r.height))
                } else {
                    for row in 0..<Int(r.height) {
                        (destination + row * pitch).copyMemory(from: first + row * res.stride, byteCount: rowBytes)
                    }
                }
            } else {
                for row in 0..<Int(r.height) {
                    _ = vgpu_convert_to_xrgb8888(res.format.wireValue, destination + row * pitch, first + row * res.stride, Int(r.width))
                }
            }
            return true
        }
    }

    public func copyCursorImage(_ id: ResourceID, into destination: UnsafeMutableRawPointer) throws(GPUFailure) {
        try table.withLock { (t: inout ResourceTable) throws(GPUFailure) in
            guard let res = t[id] else { throw .invalidResourceID("cursor \(id) does not exist") }
            guard res.width == 64, res.height == 64 else {
                throw .invalidParameter("cursor \(id) is \(res.width)x\(res.height), not 64x64")
            }
            let count = 64 * 64
            let src = UnsafeRawPointer(res.storage.base)
            if res.format == .b8g8r8a8 {
                destination.copyMemory(from: src, byteCount: count * 4)
                return
            }
            // 4096 pixels, cursor path only: keep alpha where the format has one.
            let (b, g, r, a) = res.format.byteOffsets
            let s = src.assumingMemoryBound(to: UInt8.self)
            let d = destination.assumingMemoryBound(to: UInt8.self)
            for i in 0..<count {
                let p = i * 4
                d[p] = s[p + b]
                d[p + 1] = s[p + g]
                d[p + 2] = s[p + r]
                d[p + 3] = a.map { s[p + $0] } ?? 0xFF
            }
        }
    }

    public func hostStorage(of id: ResourceID) -> HostPixelStorage? {
        table.withLock { $0[id]?.storage }
    }

    public func backingEntries(of id: ResourceID) -> [BackingEntry]? {
        table.withLock { t in t[id].map { $0.backing?.entries ?? [] } }
    }

    public func resources() -> [RendererResourceInfo] {
        table.withLock { t in
            t.resources.values.sorted { $0.id < $1.id }.map { r in
                RendererResourceInfo(id: r.id, geometry: ResourceGeometry(format: r.format, width: r.width, height: r.height),
                                     stride: r.stride, hostBytes: r.storage.length,
                                     backingEntryCount: r.backing?.entries.count ?? 0, backingBytes: r.backing?.totalLength ?? 0,
                                     hostBuffer: Self.info(of: r))
            }
        }
    }

    public func reset() {
        // Move the resources out so their mappings are released after the lock.
        let dropped = table.withLock { t in
            let all = t.resources
            t.removeAll()
            return all
        }
        _ = dropped
        spares.withLock { $0.removeAll() }
        scratch.withLock { $0.release() }
    }
}

import CShims
import SystemPackage
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// The kinds of host buffer a resource can be exported as, best first (design notes, section 3).
public enum HostBufferKind: String, CaseIterable, Sendable {
    /// A dmabuf made by `/dev/udmabuf` over memfd pages (guest RAM or a sealed shadow).
    case udmabuf
    /// A dmabuf allocated from a DMA-BUF heap (`/dev/dma_heap/system`).
    case dmaHeap = "dma-heap"
    /// A DRM dumb buffer (a card node that makes them, e.g. vgem), exported by PRIME as a dmabuf.
    case drmDumb = "drm-dumb"
    /// A sealed memfd: no dmabuf, always there.
    case memfd
    /// A dmabuf of a GL texture, exported by virglrenderer's EGL display
    /// (EGL_MESA_image_dma_buf_export; needs a render node). Made for 3D resources, not probed.
    case glTexture = "gl-texture"

    /// The kinds `check-host` and the allocator try.
    public static let probed: [HostBufferKind] = [.udmabuf, .dmaHeap, .drmDumb, .memfd]

    /// True for the kinds whose exported fd is a dmabuf.
    public var isDMABuf: Bool { self != .memfd }
}

/// What trying one kind for real found.
public enum HostBufferProbeStatus: Sendable, Equatable {
    /// Allocated, mapped, written, exported, re-mapped and compared: `detail` says what was done.
    case available(detail: String)
    /// The host has no way to make it (a missing device node, no capable DRM node): `reason`
    /// names the path and the error.
    case unavailable(reason: String)
    /// The device is there but a step failed (`step` names the call; a content mismatch is
    /// reported as EIO on its "compare" step).
    case failed(step: String, errno: Errno)

    public var name: String {
        switch self {
        case .available: "available"
        case .unavailable: "unavailable"
        case .failed: "failed"
        }
    }

    public var isAvailable: Bool { if case .available = self { true } else { false } }

    public var detail: String {
        switch self {
        case let .available(d): d
        case let .unavailable(r): r
        case let .failed(step, e): "\(step): \(e)"
        }
    }
}

public struct HostBufferProbeResult: Sendable, Equatable {
    public var kind: HostBufferKind
    public var status: HostBufferProbeStatus
    public init(kind: HostBufferKind, status: HostBufferProbeStatus) { self.kind = kind; self.status = status }
}

/// Tries each host buffer kind for real: allocate, map, write, export, re-map from the exported
/// fd, compare, and `DMA_BUF_IOCTL_SYNC` around CPU access for dmabufs. Nothing is kept.
public enum HostBufferProbe {
    /// Device nodes the probes use (overridable for tests of the unavailable paths).
    public struct Paths: Sendable {
        public var udmabuf = "/dev/udmabuf"
        public var dmaHeap = "/dev/dma_heap/system"
        public var dri = "/dev/dri"
        public init() {}
    }

    /// Bytes each probe allocates (16 pages).
    public static let probeSize = 64 * 1024
    /// The name given to every probe dmabuf (DMA_BUF_SET_NAME).
    public static let dmabufName = "vgpu:check"

    public static func probeAll(paths: Paths = Paths()) -> [HostBufferProbeResult] {
        HostBufferKind.probed.map { probe($0, paths: paths) }
    }

    public static func probe(_ kind: HostBufferKind, paths: Paths = Paths()) -> HostBufferProbeResult {
        let status: HostBufferProbeStatus
        do throws(ProbeStop) {
            switch kind {
            case .memfd: status = .available(detail: try probeMemfd())
            case .udmabuf: status = .available(detail: try probeUdmabuf(path: paths.udmabuf))
            case .dmaHeap: status = .available(detail: try probeDMAHeap(path: paths.dmaHeap))
            case .drmDumb: status = .available(detail: try probeDRMDumb(dri: paths.dri))
            case .glTexture: status = .unavailable(reason: "made by virglrenderer for 3D resources (--virgl with a render node), not probed")
            }
        } catch {
            switch error {
            case let .unavailable(reason): status = .unavailable(reason: reason)
            case let .failed(step, e): status = .failed(step: step, errno: e)
            }
        }
        return HostBufferProbeResult(kind: kind, status: status)
    }

    // MARK: the probes

    /// memfd: create, seal against resizing, map, write, re-map from a re-opened fd, compare.
    static func probeMemfd() throws(ProbeStop) -> String {
        let size = probeSize
        let memfd = try sealedMemfd(size: size)
        // The seals hold: growing is refused.
        if ftruncate(memfd.rawValue, off_t(size * 2)) == 0 { throw .failed("ftruncate past F_SEAL_GROW (succeeded)", .notPermitted) }
        let map = try mapShared(memfd, length: size, writable: true, step: "mmap memfd")
        writePattern(map.base, size, seed: 0x5a)
        // Re-opened (a new open file description, read-only), as vgpuctl export hands it out.
        let reopened = try ownedFD("open /proc/self/fd/\(memfd.rawValue)") { open("/proc/self/fd/\(memfd.rawValue)", O_RDONLY | O_CLOEXEC) }
        let again = try mapShared(reopened, length: size, writable: false, step: "mmap re-opened memfd")
        guard checkPattern(again.base, size, seed: 0x5a) else { throw .failed("compare re-mapped memfd", .ioError) }
        return "sealed (shrink, grow), \(size / 1024) KiB mapped, written, re-opened read-only and compared"
    }

    /// udmabuf: a dmabuf over a sealed memfd's pages; both sides see each other's writes.
    static func probeUdmabuf(path: String) throws(ProbeStop) -> String {
        let dev = try openDevice(path, O_RDWR | O_CLOEXEC)
        let size = probeSize
        let memfd = try sealedMemfd(size: size)
        let memMap = try mapShared(memfd, length: size, writable: true, step: "mmap memfd")
        writePattern(memMap.base, size, seed: 0x33)
        var create = udmabuf_create()
        create.memfd = UInt32(memfd.rawValue)
        create.flags = UInt32(UDMABUF_FLAGS_CLOEXEC)
        create.offset = 0
        create.size = UInt64(size)
        let dmabuf = try ownedFD("UDMABUF_CREATE") { vgpu_ioctl_ptr(dev.rawValue, vgpu_UDMABUF_CREATE(), &create) }
        try setName(dmabuf)
        let bufMap = try mapShared(dmabuf, length: size, writable: true, step: "mmap udmabuf")
        try sync(dmabuf, vgpu_DMA_BUF_SYNC_START_RW())
        let same = checkPattern(bufMap.base, size, seed: 0x33)
        writePattern(bufMap.base, size, seed: 0x44)
        try sync(dmabuf, vgpu_DMA_BUF_SYNC_END_RW())
        guard same else { throw .failed("compare udmabuf with memfd", .ioError) }
        guard checkPattern(memMap.base, size, seed: 0x44) else { throw .failed("compare memfd after udmabuf write", .ioError) }
        return "dmabuf over a sealed memfd, \(size / 1024) KiB, named \(dmabufName), mapped both ways with DMA_BUF_IOCTL_SYNC and compared (zero copy)"
    }

    /// dma-heap: allocate from the system heap, map, write, sync, re-map and compare.
    static func probeDMAHeap(path: String) throws(ProbeStop) -> String {
        let heap = try openDevice(path, O_RDONLY | O_CLOEXEC)
        let size = probeSize
        var alloc = dma_heap_allocation_data()
        alloc.len = UInt64(size)
        alloc.fd_flags = vgpu_dmabuf_fd_flags()
        alloc.heap_flags = 0
        _ = try check("DMA_HEAP_IOCTL_ALLOC") { vgpu_ioctl_ptr(heap.rawValue, vgpu_DMA_HEAP_IOCTL_ALLOC(), &alloc) }
        let dmabuf = OwnedFileDescriptor(Int32(bitPattern: alloc.fd))
        try setName(dmabuf)
        try writeAndCompare(dmabuf, size: size, seed: 0x71, what: "heap dmabuf")
        return "\(path): \(size / 1024) KiB dmabuf, named \(dmabufName), written and re-mapped with DMA_BUF_IOCTL_SYNC, compared"
    }

    /// DRM dumb: the first DRM node that makes dumb buffers (a card node: render nodes refuse
    /// CREATE_DUMB), exported with PRIME, mapped through the dmabuf, written, re-mapped, compared.
    static func probeDRMDumb(dri: String) throws(ProbeStop) -> String {
        let nodes: [String]
        do throws(Errno) { nodes = try listDirectory(dri).filter { $0.hasPrefix("card") || $0.hasPrefix("renderD") }.sorted() } catch {
            throw .unavailable("\(dri): \(error)")
        }
        if nodes.isEmpty { throw .unavailable("\(dri): no card or render nodes") }
        var refusals: [String] = []
        for node in nodes {
            let path = dri + "/" + node
            let fd = open(path, O_RDWR | O_CLOEXEC)
            if fd < 0 { refusals.append("\(path): \(Errno(rawValue: errno))"); continue }
            // The allocator's own dumb buffer path: CREATE_DUMB, PRIME export, handle dropped.
            let buffer: HostBuffer
            do { buffer = try HostBufferAllocator.makeDumb(on: DRMDevice(fd: fd, path: path), bytes: probeSize) } catch {
                refusals.append(error.message)
                continue
            }
            let dmabuf = OwnedFileDescriptor(vgpu_fcntl_int(buffer.fd, F_DUPFD_CLOEXEC, 0))
            try setName(dmabuf)
            try writeAndCompare(dmabuf, size: buffer.size, seed: 0x19, what: "\(path) dumb dmabuf")
            return "\(path): dumb buffer of \(buffer.size / 1024) KiB, PRIME dmabuf named \(dmabufName), written and re-mapped with DMA_BUF_IOCTL_SYNC, compared"
        }
        throw .unavailable("no DRM node makes dumb buffers: " + refusals.joined(separator: "; "))
    }

    // MARK: steps

    enum ProbeStop: Error {
        case unavailable(String)
        case failed(String, Errno)
    }

    /// Maps `fd` shared; a failure stops the probe at `step`.
    static func mapShared(_ fd: OwnedFileDescriptor, length: Int, writable: Bool, step: String) throws(ProbeStop) -> SharedFileMapping {
        do throws(Errno) { return try SharedFileMapping(file: fd, length: length, writable: writable) } catch {
            throw .failed(step, error)
        }
    }

    /// Runs a call that returns -1 and sets errno on failure, retrying EINTR.
    static func check(_ step: String, _ body: () -> Int32) throws(ProbeStop) -> Int32 {
        do throws(Errno) { return try retryingEINTR(body) } catch { throw .failed(step, error) }
    }

    static func ownedFD(_ step: String, _ body: () -> Int32) throws(ProbeStop) -> OwnedFileDescriptor {
        OwnedFileDescriptor(try check(step, body))
    }

    /// Opens a device node; a missing or refused node means the kind is unavailable here.
    static func openDevice(_ path: String, _ flags: Int32) throws(ProbeStop) -> OwnedFileDescriptor {
        let fd = open(path, flags)
        guard fd >= 0 else { throw .unavailable("\(path): \(Errno(rawValue: errno))") }
        return OwnedFileDescriptor(fd)
    }

    static func sealedMemfd(size: Int) throws(ProbeStop) -> OwnedFileDescriptor {
        let memfd = try ownedFD("memfd_create") { vgpu_memfd_create("vgpu:check", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING)) }
        _ = try check("ftruncate memfd") { ftruncate(memfd.rawValue, off_t(size)) }
        let seals = vgpu_F_SEAL_SHRINK() | vgpu_F_SEAL_GROW()
        _ = try check("F_ADD_SEALS") { vgpu_memfd_add_seals(memfd.rawValue, seals) }
        let got = try check("F_GET_SEALS") { vgpu_memfd_get_seals(memfd.rawValue) }
        guard got & seals == seals else { throw .failed("F_GET_SEALS (seals missing)", .invalidArgument) }
        return memfd
    }

    static func setName(_ dmabuf: OwnedFileDescriptor) throws(ProbeStop) {
        _ = try check("DMA_BUF_SET_NAME") {
            dmabufName.withCString { vgpu_ioctl_ptr(dmabuf.rawValue, vgpu_DMA_BUF_SET_NAME(), UnsafeMutableRawPointer(mutating: UnsafeRawPointer($0))) }
        }
    }

    static func sync(_ dmabuf: OwnedFileDescriptor, _ flags: UInt64) throws(ProbeStop) {
        var s = dma_buf_sync()
        s.flags = flags
        _ = try check("DMA_BUF_IOCTL_SYNC") { vgpu_ioctl_ptr(dmabuf.rawValue, vgpu_DMA_BUF_IOCTL_SYNC(), &s) }
    }

    /// Maps the dmabuf, writes a pattern between SYNC_START and SYNC_END, maps it again and
    /// compares under a read sync.
    static func writeAndCompare(_ dmabuf: OwnedFileDescriptor, size: Int, seed: UInt8, what: String) throws(ProbeStop) {
        do {
            let map = try mapShared(dmabuf, length: size, writable: true, step: "mmap \(what)")
            try sync(dmabuf, vgpu_DMA_BUF_SYNC_START_RW())
            writePattern(map.base, size, seed: seed)
            try sync(dmabuf, vgpu_DMA_BUF_SYNC_END_RW())
        }
        let again = try mapShared(dmabuf, length: size, writable: false, step: "mmap \(what) again")
        try sync(dmabuf, vgpu_DMA_BUF_SYNC_START_READ())
        let same = checkPattern(again.base, size, seed: seed)
        try sync(dmabuf, vgpu_DMA_BUF_SYNC_END_READ())
        guard same else { throw .failed("compare re-mapped \(what)", .ioError) }
    }

    static func pattern(_ i: Int, seed: UInt8) -> UInt8 { UInt8(truncatingIfNeeded: i &* 31 &+ i >> 12) ^ seed }

    static func writePattern(_ p: UnsafeMutableRawPointer, _ n: Int, seed: UInt8) {
        let bytes = p.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n { bytes[i] = pattern(i, seed: seed) }
    }

    static func checkPattern(_ p: UnsafeMutableRawPointer, _ n: Int, seed: UInt8) -> Bool {
        let bytes = p.assumingMemoryBound(to: UInt8.self)
        for i in 0..<n where bytes[i] != pattern(i, seed: seed) { return false }
        return true
    }

    /// The names in a directory (no "." or "..").
    public static func listDirectory(_ path: String) throws(Errno) -> [String] {
        guard let dir = opendir(path) else { throw Errno(rawValue: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

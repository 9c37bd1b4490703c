import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `--host-buffers`: which kinds the backend may make.
public enum HostBufferPreference: String, CaseIterable, Sendable {
    /// The best the host has: udmabuf over guest RAM (zero copy), else udmabuf over the host
    /// copy, else a dma-heap or DRM dumb shadow, else the sealed memfd host copy.
    case auto
    /// udmabufs only (over guest RAM, else over the host copy).
    case udmabuf
    /// DRM dumb buffer shadows (a card node that makes them, e.g. vgem).
    case drm
    /// dma-heap shadows (`/dev/dma_heap/system`).
    case heap
    /// The sealed memfd host copy; no dmabuf.
    case memfd

    /// The kind this preference forces (nil for auto).
    public var forcedKind: HostBufferKind? {
        switch self {
        case .auto: nil
        case .udmabuf: .udmabuf
        case .drm: .drmDumb
        case .heap: .dmaHeap
        case .memfd: .memfd
        }
    }
}

/// Makes host buffers of the kinds this host can make, chosen once at start-up by trying each
/// kind for real (`HostBufferProbe`). Shared by every device of the process; thread-safe (all
/// state is immutable after init).
public final class HostBufferAllocator: Sendable {
    public let preference: HostBufferPreference
    /// What the start-up probes found, one per kind.
    public let probeResults: [HostBufferProbeResult]
    /// Kinds that worked, best first.
    public let available: [HostBufferKind]
    /// udmabuf's module limits (list entries per buffer, bytes per buffer), when it is there.
    public let udmabufListLimit: Int
    public let udmabufSizeLimit: UInt64

    private let udmabufDevice: DeviceFile?
    private let heapDevice: DeviceFile?
    private let drmDevice: DRMDevice?

    final class DeviceFile: Sendable {
        let fd: Int32
        init(_ fd: Int32) { self.fd = fd }
        deinit { close(fd) }
    }

    /// Probes every kind and opens the devices the preference needs. Throws when a forced kind
    /// is not available here (a one-line reason naming the device and the error).
    public init(preference: HostBufferPreference, paths: HostBufferProbe.Paths = HostBufferProbe.Paths()) throws(HostBufferError) {
        let results = preference == .memfd
            ? [HostBufferProbe.probe(.memfd, paths: paths)]
            : HostBufferProbe.probeAll(paths: paths)
        let available = results.filter(\.status.isAvailable).map(\.kind)
        if let forced = preference.forcedKind, !available.contains(forced) {
            let why = results.first { $0.kind == forced }.map { "\($0.status.name): \($0.status.detail)" } ?? "not probed"
            throw HostBufferError("--host-buffers \(preference.rawValue): \(forced.rawValue) is \(why)")
        }
        self.preference = preference
        self.probeResults = results
        self.available = available
        let wants = { (k: HostBufferKind) in available.contains(k) && (preference == .auto || preference.forcedKind == k) }
        udmabufDevice = wants(.udmabuf) ? Self.openDevice(paths.udmabuf, O_RDWR | O_CLOEXEC) : nil
        heapDevice = wants(.dmaHeap) ? Self.openDevice(paths.dmaHeap, O_RDONLY | O_CLOEXEC) : nil
        drmDevice = wants(.drmDumb) ? Self.openDumbCapableNode(paths.dri) : nil
        udmabufListLimit = Self.readModuleParameter("udmabuf", "list_limit").map(Int.init) ?? 1024
        udmabufSizeLimit = (Self.readModuleParameter("udmabuf", "size_limit_mb") ?? 64) * 1024 * 1024
    }

    /// memfd host copies only, nothing probed (tests, and hosts where nothing else is wanted).
    public static let memfdOnly: HostBufferAllocator = {
        // memfd_create cannot be missing on Linux ≥ 3.17; a failure here is a broken host.
        try! HostBufferAllocator(preference: .memfd)
    }()

    /// True when resources with page-aligned guest RAM backing are exported with no copy.
    public var zeroCopy: Bool { udmabufDevice != nil }

    /// The kinds a resource without zero copy gets, best first (memfd, the host copy itself, last).
    /// `.udmabuf` here means a udmabuf over the host copy's memfd.
    public var shadowKinds: [HostBufferKind] {
        var kinds: [HostBufferKind] = []
        if udmabufDevice != nil { kinds.append(.udmabuf) }
        if heapDevice != nil { kinds.append(.dmaHeap) }
        if drmDevice != nil { kinds.append(.drmDumb) }
        // Always last: the host copy itself, when a dmabuf cannot be had for a resource.
        kinds.append(.memfd)
        return kinds
    }

    /// A udmabuf over memfd pages, in order (UDMABUF_CREATE_LIST). Not mapped: the backend has
    /// the pages mapped already. Each fd must be sealed against shrinking; offsets and lengths
    /// must be page multiples.
    public func makeUdmabuf(over pages: [MemfdPages], name: String) throws(HostBufferError) -> HostBuffer {
        guard let dev = udmabufDevice else { throw HostBufferError("udmabuf is not in use (--host-buffers \(preference.rawValue))") }
        guard !pages.isEmpty else { throw HostBufferError("udmabuf over no pages") }
        guard pages.count <= udmabufListLimit else {
            throw HostBufferError("\(pages.count) page ranges, more than udmabuf's list_limit \(udmabufListLimit)")
        }
        let total = pages.reduce(UInt64(0)) { $0 &+ $1.length }
        guard total <= udmabufSizeLimit, let size = Int(exactly: total) else {
            throw HostBufferError("\(total) bytes, more than udmabuf's size_limit_mb (\(udmabufSizeLimit >> 20) MiB)")
        }
        let page = UInt64(pageSize)
        for (i, p) in pages.enumerated() {
            guard p.offset % page == 0, p.length % page == 0, p.length > 0 else {
                throw HostBufferError("page range \(i) (offset \(p.offset), \(p.length) bytes) is not page-aligned")
            }
            let seals = vgpu_memfd_get_seals(p.fd)
            guard seals >= 0 else { throw .call("F_GET_SEALS on page range \(i)'s file") }
            guard seals & vgpu_F_SEAL_SHRINK() != 0 else {
                throw HostBufferError("the memfd behind page range \(i) is not sealed against shrinking (QEMU: memory-backend-memfd seal=on)")
            }
        }
        // udmabuf_create_list ends in a flexible array of udmabuf_create_item.
        let headerSize = MemoryLayout<udmabuf_create_list>.size
        let itemSize = MemoryLayout<udmabuf_create_item>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: headerSize + itemSize * pages.count, alignment: 8)
        defer { raw.deallocate() }
        var header = udmabuf_create_list()
        header.flags = UInt32(UDMABUF_FLAGS_CLOEXEC)
        header.count = UInt32(pages.count)
        raw.storeBytes(of: header, as: udmabuf_create_list.self)
        for (i, p) in pages.enumerated() {
            var item = udmabuf_create_item()
            item.memfd = UInt32(bitPattern: p.fd)
            item.offset = p.offset
            item.size = p.length
            raw.storeBytes(of: item, toByteOffset: headerSize + i * itemSize, as: udmabuf_create_item.self)
        }
        let fd = vgpu_ioctl_ptr(dev.fd, vgpu_UDMABUF_CREATE_LIST(), raw)   // retries EINTR itself
        guard fd >= 0 else { throw .call("UDMABUF_CREATE_LIST (\(pages.count) ranges, \(total) bytes)") }
        let buffer = try HostBuffer(kind: .udmabuf, fd: fd, size: size, map: false)
        buffer.setName(name)
        return buffer
    }

    /// A mapped buffer of `kind` (dma-heap, DRM dumb or memfd) of at least `size` bytes (dmabufs
    /// are rounded up to pages), zero-filled, named `name`.
    public func makeMapped(_ kind: HostBufferKind, size: Int, name: String) throws(HostBufferError) -> HostBuffer {
        guard size > 0 else { throw HostBufferError("host buffer of \(size) bytes") }
        let pages = (size + pageSize - 1) / pageSize * pageSize
        let buffer: HostBuffer
        switch kind {
        case .memfd:
            buffer = try HostBuffer.memfd(size: pages, name: name)
        case .dmaHeap:
            guard let heap = heapDevice else { throw HostBufferError("dma-heap is not in use") }
            var alloc = dma_heap_allocation_data()
            alloc.len = UInt64(pages)
            alloc.fd_flags = vgpu_dmabuf_fd_flags()
            guard vgpu_ioctl_ptr(heap.fd, vgpu_DMA_HEAP_IOCTL_ALLOC(), &alloc) == 0 else { throw .call("DMA_HEAP_IOCTL_ALLOC \(pages) bytes") }
            buffer = try HostBuffer(kind: .dmaHeap, fd: Int32(bitPattern: alloc.fd), size: pages, map: true)
        case .drmDumb:
            guard let drm = drmDevice else { throw HostBufferError("drm-dumb is not in use") }
            buffer = try Self.makeDumb(on: drm, bytes: pages)
        case .udmabuf:
            throw HostBufferError("a udmabuf is made over memfd pages (makeUdmabuf)")
        case .glTexture:
            throw HostBufferError("a GL texture dmabuf is made by virglrenderer (HostBuffer.adopt)")
        }
        buffer.setName(name)
        return buffer
    }

    /// A dumb buffer used as bytes: 1024 pixels of 32 bits a row (4096-byte pitch), as many rows
    /// as needed; the resource's own layout is recorded by the caller. Exported with PRIME,
    /// then the GEM handle is dropped: the dmabuf keeps the object alive.
    static func makeDumb(on drm: DRMDevice, bytes: Int) throws(HostBufferError) -> HostBuffer {
        var create = drm_mode_create_dumb()
        create.width = 1024
        create.height = UInt32((bytes + 4095) / 4096)
        create.bpp = 32
        guard vgpu_ioctl_ptr(drm.fd, vgpu_DRM_IOCTL_MODE_CREATE_DUMB(), &create) == 0 else {
            throw .call("\(drm.path): CREATE_DUMB")
        }
        defer {
            var destroy = drm_mode_destroy_dumb()
            destroy.handle = create.handle
            _ = vgpu_ioctl_ptr(drm.fd, vgpu_DRM_IOCTL_MODE_DESTROY_DUMB(), &destroy)
        }
        var prime = drm_prime_handle()
        prime.handle = create.handle
        prime.flags = vgpu_dmabuf_fd_flags()
        guard vgpu_ioctl_ptr(drm.fd, vgpu_DRM_IOCTL_PRIME_HANDLE_TO_FD(), &prime) == 0 else {
            throw .call("\(drm.path): PRIME_HANDLE_TO_FD")
        }
        return try HostBuffer(kind: .drmDumb, fd: prime.fd, size: Int(create.size), map: true, keepAlive: drm)
    }

    // MARK: devices

    static func openDevice(_ path: String, _ flags: Int32) -> DeviceFile? {
        let fd = open(path, flags)
        return fd >= 0 ? DeviceFile(fd) : nil
    }

    /// The first DRM node (card before render, sorted) on which CREATE_DUMB works.
    static func openDumbCapableNode(_ dri: String) -> DRMDevice? {
        guard let names = try? HostBufferProbe.listDirectory(dri) else { return nil }
        for name in names.filter({ $0.hasPrefix("card") || $0.hasPrefix("renderD") }).sorted() {
            let path = dri + "/" + name
            let fd = open(path, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { continue }
            let device = DRMDevice(fd: fd, path: path)
            if (try? makeDumb(on: device, bytes: 4096)) != nil { return device }
        }
        return nil
    }

    /// /sys/module/NAME/parameters/PARAM as a number, if readable.
    static func readModuleParameter(_ module: String, _ parameter: String) -> UInt64? {
        let fd = open("/sys/module/\(module)/parameters/\(parameter)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 31) }
        guard n > 0 else { return nil }
        return UInt64(String(decoding: buf[0..<n].prefix { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self))
    }
}

/// The system page size (udmabuf works in whole pages).
public let pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))

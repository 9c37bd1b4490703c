import CImportWire
import CShims
import VGPUResolve
import VhostUser
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// An imported host buffer, mapped read-only (PROT_READ, MAP_SHARED). Owns the fd and the
/// mapping: dropping the last reference unmaps and closes (revocation, RELEASE, reset).
/// @unchecked: immutable after init; only read through the mapping.
final class BufferMapping: @unchecked Sendable {
    let fd: OwnedFileDescriptor
    let base: UnsafeRawPointer
    let length: Int
    /// A dmabuf (anon_inode:dmabuf): reads are bracketed with DMA_BUF_IOCTL_SYNC.
    let isDMABuf: Bool

    enum MapError: Error, CustomStringConvertible {
        case empty
        case larger(layout: Int, file: Int)
        case mmap(Int32)
        var description: String {
            switch self {
            case .empty: "the buffer has no bytes"
            case let .larger(l, f): "layout says \(l) bytes, the fd has \(f)"
            case let .mmap(e): "mmap: \(String(cString: strerror(e)))"
            }
        }
    }

    /// Maps `size` bytes of `fd`, refusing sizes beyond the file (a mapping past its end faults).
    init(fd: OwnedFileDescriptor, size: Int) throws(MapError) {
        guard size > 0 else { throw .empty }
        let fileSize = Int(lseek(fd.rawValue, 0, SEEK_END))
        guard fileSize >= size else { throw .larger(layout: size, file: fileSize) }
        guard let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd.rawValue, 0), p != MAP_FAILED else { throw .mmap(errno) }
        self.fd = fd
        self.base = UnsafeRawPointer(p)
        self.length = size
        self.isDMABuf = Self.isDMABuf(fd.rawValue)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), length) }

    /// The size of the file behind `fd` (lseek to the end: dmabufs have no st_size).
    static func fileSize(_ fd: Int32) -> Int { max(0, Int(lseek(fd, 0, SEEK_END))) }

    private static func isDMABuf(_ fd: Int32) -> Bool {
        var link = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/self/fd/\(fd)", &link, 63)
        guard n > 0 else { return false }
        return String(decoding: link.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("anon_inode:dmabuf")
    }

    /// The importer's digest of the visible bytes (docs/importer-protocol.md); nil when the
    /// rows do not fit in the mapping (checked in C, overflow included, before any read).
    func digest(_ geometry: DigestGeometry) -> UInt64? {
        if isDMABuf { sync(vgpu_DMA_BUF_SYNC_START_READ()) }
        defer { if isDMABuf { sync(vgpu_DMA_BUF_SYNC_END_READ()) } }
        var out: UInt64 = 0
        let rc = vgpu_import_digest_rows(base, UInt64(length), geometry.offset, geometry.stride, geometry.rowBytes, geometry.rows, &out)
        return rc == 0 ? out : nil
    }

    private func sync(_ flags: UInt64) {
        var s = dma_buf_sync()
        s.flags = flags
        _ = vgpu_ioctl_ptr(fd.rawValue, vgpu_DMA_BUF_IOCTL_SYNC(), &s)   // retries EINTR itself
    }
}

/// Which bytes the digest covers: `rows` rows of `rowBytes`, `stride` apart, from `offset`.
struct DigestGeometry: Equatable, Sendable {
    var offset: UInt64
    var stride: UInt64
    var rowBytes: UInt64
    var rows: UInt64

    /// From a layout: width × bytes-per-pixel per row. A fourcc of 0 (a buffer known only by
    /// its fd) is one row over the whole size. nil: a fourcc whose pixel size is not known.
    init?(_ layout: ResolvedLayout) {
        guard layout.offset >= 0, layout.stride >= 0, layout.size >= 0 else { return nil }
        if layout.fourcc == 0 {
            self.init(offset: 0, stride: UInt64(layout.size), rowBytes: UInt64(layout.size), rows: 1)
            return
        }
        guard let bpp = bytesPerPixel(fourcc: layout.fourcc) else { return nil }
        let (rowBytes, overflow) = UInt64(layout.width).multipliedReportingOverflow(by: bpp)
        guard !overflow else { return nil }
        self.init(offset: UInt64(layout.offset), stride: UInt64(layout.stride), rowBytes: rowBytes, rows: UInt64(layout.height))
    }

    init(offset: UInt64, stride: UInt64, rowBytes: UInt64, rows: UInt64) {
        self.offset = offset; self.stride = stride; self.rowBytes = rowBytes; self.rows = rows
    }
}

/// Bytes per pixel of the single-plane DRM formats a virtio-gpu resource can have.
func bytesPerPixel(fourcc: UInt32) -> UInt64? {
    func code(_ s: StaticString) -> UInt32 {
        let p = s.utf8Start
        return UInt32(p[0]) | UInt32(p[1]) << 8 | UInt32(p[2]) << 16 | UInt32(p[3]) << 24
    }
    switch fourcc {
    case code("XR24"), code("AR24"), code("XB24"), code("AB24"), code("BX24"), code("BA24"), code("RX24"), code("RA24"),
         code("XR30"), code("AR30"), code("XB30"), code("AB30"):
        return 4
    case code("RG16"), code("BG16"): return 2
    case code("RG24"), code("BG24"): return 3
    case code("R8  "): return 1
    default: return nil
    }
}

import CShims
import SystemPackage
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// Why a host buffer could not be made or handed out: the call that failed and its errno, or a
/// reason the buffer cannot be made at all (a limit, an unsealed memfd). One line, for logs and
/// `vgpuctl show`.
public struct HostBufferError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    static func call(_ step: String, _ e: Int32 = errno) -> HostBufferError { HostBufferError("\(step): \(Errno(rawValue: e))") }
    public var description: String { message }
}

/// Pages of a memfd (guest RAM or a host copy) that a udmabuf is made over: `length` bytes at
/// `offset` in `fd`, both page multiples. The fd is borrowed.
public struct MemfdPages: Equatable, Sendable {
    public let fd: Int32
    public let offset: UInt64
    public let length: UInt64
    public init(fd: Int32, offset: UInt64, length: UInt64) {
        self.fd = fd
        self.offset = offset
        self.length = length
    }
}

/// A buffer other processes can receive: a dmabuf (udmabuf, dma-heap, DRM dumb) or a sealed
/// memfd. Host buffer namespace (design notes, section 3). Owns its fd and, when mapped, its
/// mapping; both go at deinit. Fds already handed out stay valid: the kernel counts references.
public final class HostBuffer: @unchecked Sendable {
    public let kind: HostBufferKind
    /// The buffer's fd (O_CLOEXEC). Owned: `dup` it (or use `exportFD`) to hand it out.
    public let fd: Int32
    /// Bytes (a page multiple for dmabufs).
    public let size: Int
    /// A read-write `MAP_SHARED` mapping of all `size` bytes, if the backend maps it (shadows it
    /// writes into); nil for udmabufs over pages the backend has mapped already.
    public let base: UnsafeMutableRawPointer?
    /// What must outlive the fd (the DRM device a dumb buffer came from).
    private let keepAlive: AnyObject?

    init(kind: HostBufferKind, fd: Int32, size: Int, map: Bool, keepAlive: AnyObject? = nil) throws(HostBufferError) {
        var base: UnsafeMutableRawPointer?
        if map {
            guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
                let e = HostBufferError.call("mmap \(kind.rawValue) of \(size) bytes")
                close(fd)
                throw e
            }
            base = p
        }
        self.kind = kind
        self.fd = fd
        self.size = size
        self.base = base
        self.keepAlive = keepAlive
    }

    public var isDMABuf: Bool { kind.isDMABuf }

    /// A zero-filled, mapped memfd of `size` bytes (sealing allowed; sealed when first exported).
    public static func memfd(size: Int, name: String) throws(HostBufferError) -> HostBuffer {
        guard size > 0 else { throw HostBufferError("memfd of \(size) bytes") }
        let fd = vgpu_memfd_create(name, UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        guard fd >= 0 else { throw .call("memfd_create") }
        do throws(Errno) { _ = try retryingEINTR { ftruncate(fd, off_t(size)) } } catch {
            close(fd)
            throw .call("ftruncate memfd to \(size)", error.rawValue)
        }
        return try HostBuffer(kind: .memfd, fd: fd, size: size, map: true)
    }

    /// Takes ownership of a dmabuf someone else made (virglrenderer's texture export); its size
    /// is what the kernel says (`lseek` to the end). Not mapped.
    public static func adopt(dmabuf fd: Int32, kind: HostBufferKind) throws(HostBufferError) -> HostBuffer {
        let end = lseek(fd, 0, SEEK_END)
        guard end > 0 else { let e = HostBufferError.call("lseek on the \(kind.rawValue) dmabuf"); close(fd); throw e }
        return try HostBuffer(kind: kind, fd: fd, size: Int(end), map: false)
    }

    /// Seals a memfd against shrinking and growing (its size is fixed for life, so consumers'
    /// mappings cannot fault, and udmabuf accepts it). Nothing for a dmabuf.
    public func sealSize() {
        guard kind == .memfd else { return }
        _ = vgpu_memfd_add_seals(fd, vgpu_F_SEAL_SHRINK() | vgpu_F_SEAL_GROW())
    }

    /// Brackets CPU access to a dmabuf's mapping (`DMA_BUF_IOCTL_SYNC`); nothing for a memfd.
    /// The kernel needs these for caches on non-coherent systems; on x86 they are cheap.
    public func beginCPUAccess(write: Bool) { sync(write ? vgpu_DMA_BUF_SYNC_START_RW() : vgpu_DMA_BUF_SYNC_START_READ()) }
    public func endCPUAccess(write: Bool) { sync(write ? vgpu_DMA_BUF_SYNC_END_RW() : vgpu_DMA_BUF_SYNC_END_READ()) }

    private func sync(_ flags: UInt64) {
        guard isDMABuf else { return }
        var s = dma_buf_sync()
        s.flags = flags
        _ = vgpu_ioctl_ptr(fd, vgpu_DMA_BUF_IOCTL_SYNC(), &s)   // retries EINTR itself
    }

    /// Names the dmabuf (`DMA_BUF_SET_NAME`, shown in /proc/PID/fdinfo and debugfs). Best effort.
    public func setName(_ name: String) {
        guard isDMABuf else { return }
        _ = name.withCString { vgpu_ioctl_ptr(fd, vgpu_DMA_BUF_SET_NAME(), UnsafeMutableRawPointer(mutating: $0)) }
    }

    /// An fd for a consumer (the caller owns it). A memfd is sealed against resizing and opened
    /// anew read-only, so the receiver cannot write it and its mapping cannot fault. A dmabuf
    /// cannot be reopened (anonymous inode): the receiver gets a duplicate, with the access the
    /// exporter gave it.
    public func exportFD() throws(HostBufferError) -> Int32 {
        if isDMABuf {
            let raw = vgpu_fcntl_int(fd, F_DUPFD_CLOEXEC, 0)
            guard raw >= 0 else { throw .call("dup \(kind.rawValue)") }
            return raw
        }
        sealSize()
        let raw = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC)
        guard raw >= 0 else { throw .call("reopen memfd read-only") }
        return raw
    }

    deinit {
        if let base { munmap(base, size) }
        close(fd)
    }
}

/// An open DRM device node, closed when the last dumb buffer made on it is gone.
final class DRMDevice: @unchecked Sendable {
    let fd: Int32
    let path: String
    init(fd: Int32, path: String) { self.fd = fd; self.path = path }
    deinit { close(fd) }
}

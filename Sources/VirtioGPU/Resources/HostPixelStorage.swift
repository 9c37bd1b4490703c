import CShims
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Why a host copy could not be made. Carries the errno of the call that failed.
public enum HostStorageError: Error, Equatable, Sendable, CustomStringConvertible {
    case memfdCreate(errno: Int32)
    case truncate(errno: Int32)
    case map(errno: Int32)
    case invalidLength(Int)
    case reopen(errno: Int32)

    public var description: String {
        switch self {
        case let .memfdCreate(e): "memfd_create failed: errno \(e)"
        case let .truncate(e): "ftruncate failed: errno \(e)"
        case let .map(e): "mmap failed: errno \(e)"
        case let .invalidLength(n): "invalid host buffer length \(n)"
        case let .reopen(e): "cannot reopen the host buffer read-only: errno \(e)"
        }
    }
}

/// The host copy of a resource's pixels: a memfd, sized with `ftruncate` and mapped `MAP_SHARED`,
/// so a later step can export it as a `memfd` host buffer (or seal it for udmabuf) without a copy.
///
/// Host buffer namespace (design notes, section 3). Owns the fd and the mapping; unmaps and closes
/// on deinit. The memory is written only by the control-queue worker (transfers) and read by the
/// flush path on that same worker and, under the resource-table lock, by the cursor worker.
public final class HostPixelStorage: @unchecked Sendable {
    /// The memfd (O_CLOEXEC, sealing allowed). Owned: do not close it; `dup` it to hand it out.
    public let fd: Int32
    /// Start of the `MAP_SHARED` mapping, `length` bytes.
    public let base: UnsafeMutableRawPointer
    public let length: Int

    /// Creates a zero-filled buffer of `length` bytes named `name` (shown in /proc/PID/fd).
    public init(length: Int, name: String) throws(HostStorageError) {
        guard length > 0 else { throw .invalidLength(length) }
        let fd = vgpu_memfd_create(name, UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
        guard fd >= 0 else { throw .memfdCreate(errno: errno) }
        var rc: Int32
        repeat { rc = ftruncate(fd, off_t(length)) } while rc < 0 && errno == EINTR
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw .truncate(errno: e)
        }
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else {
            let e = errno
            close(fd)
            throw .map(errno: e)
        }
        self.fd = fd
        self.base = p
        self.length = length
    }

    /// An fd to hand out (vgpuctl export, vhost-user GET_SHARED_OBJECT): the memfd sealed against
    /// resizing (its size is fixed for its life, so a consumer's mapping cannot SIGBUS) and opened
    /// anew read-only, so the receiver cannot write the backend's copy. The caller owns the fd.
    public func openReadOnlyExport() throws(HostStorageError) -> Int32 {
        _ = fcntl(fd, 1033 /* F_ADD_SEALS */, Int32(2 | 4) /* F_SEAL_SHRINK | F_SEAL_GROW */)
        let raw = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC)
        guard raw >= 0 else { throw .reopen(errno: errno) }
        return raw
    }

    deinit {
        munmap(base, length)
        close(fd)
    }
}

// The one owned file descriptor type: closed when its last owner goes away.

import CShims
import Synchronization
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An fd closed when its last owner goes away. Used for everything the peer hands us, so
/// dropping a connection's state closes every fd it held. A negative value owns nothing.
public final class OwnedFileDescriptor: Sendable, CustomStringConvertible {
    public let rawValue: Int32
    /// False once `release()` handed the fd to a new owner.
    private let owned = Atomic<Bool>(true)
    public init(_ raw: Int32) { rawValue = raw }
    public convenience init(_ fd: FileDescriptor) { self.init(fd.rawValue) }
    deinit { if rawValue >= 0 && owned.load(ordering: .acquiring) { _ = Glibc.close(rawValue) } }

    /// Gives up ownership: the caller closes the returned fd; this object no longer will.
    public func release() -> Int32 {
        owned.store(false, ordering: .releasing)
        return rawValue
    }
    public var descriptor: FileDescriptor { FileDescriptor(rawValue: rawValue) }
    public var description: String { "fd \(rawValue)" }
}

/// Sets O_NONBLOCK on `fd`.
public func setNonBlocking(_ fd: Int32) throws(Errno) {
    let flags = try retryingEINTR { vgpu_fcntl_int(fd, F_GETFL, 0) }
    _ = try retryingEINTR { vgpu_fcntl_int(fd, F_SETFL, flags | O_NONBLOCK) }
}

import SystemSupport
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A connected UNIX stream socket pair (close-on-exec, blocking), like the one QEMU makes for
/// `VHOST_USER_GPU_SET_SOCKET`.
public func makeDisplaySocketPair() throws(Errno) -> (FileDescriptor, FileDescriptor) {
    var sv: [Int32] = [-1, -1]
    let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    guard socketpair(AF_UNIX, type, 0, &sv) == 0 else { throw Errno(rawValue: errno) }
    return (FileDescriptor(rawValue: sv[0]), FileDescriptor(rawValue: sv[1]))
}

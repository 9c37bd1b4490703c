#if canImport(Glibc)
import Glibc
#endif

/// The credentials of a UNIX socket peer (SO_PEERCRED, `struct ucred`).
public struct PeerCredentials: Equatable, Sendable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) { self.pid = pid; self.uid = uid; self.gid = gid }

    /// Reads the peer's credentials of a connected UNIX socket; nil if the kernel will not say.
    public static func of(socket fd: Int32) -> PeerCredentials? {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }: three 32-bit fields on Linux.
        var cred: (Int32, UInt32, UInt32) = (0, 0, 0)
        var len = socklen_t(MemoryLayout.size(ofValue: cred))
        let rc = withUnsafeMutablePointer(to: &cred) { getsockopt(fd, SOL_SOCKET, 17 /* SO_PEERCRED */, $0, &len) }
        guard rc == 0, Int(len) == MemoryLayout.size(ofValue: cred) else { return nil }
        return PeerCredentials(pid: cred.0, uid: cred.1, gid: cred.2)
    }

    /// The access rule of the control socket: the backend's own user or root.
    public func isAllowed(serverUID: UInt32) -> Bool { uid == serverUID || uid == 0 }

    public var description: String { "pid \(pid) uid \(uid) gid \(gid)" }
}

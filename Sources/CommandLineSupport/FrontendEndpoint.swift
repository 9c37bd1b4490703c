import ArgumentParser
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// Where a vhost-user daemon meets its frontend: a UNIX socket path it listens on
/// (`--socket-path`) or an inherited, already connected fd (`--fd`, libvirt). The checks and
/// messages vgpu-backend and vgpu-import-device share, as usage errors (`ValidationError`).
public enum FrontendEndpoint {
    /// Exactly one of a path or an fd, and no negative fd.
    public static func validate(hasPath: Bool, fd: Int32?) throws {
        switch (hasPath, fd) {
        case (false, nil): throw ValidationError("one of --socket-path or --fd is required")
        case (true, .some): throw ValidationError("--socket-path and --fd cannot be used together")
        default: break
        }
        if let fd, fd < 0 { throw ValidationError("--fd must be a non-negative file descriptor") }
    }

    /// The inherited fd is open (checked when it is used, not at parse time).
    public static func checkOpen(fd: Int32) throws {
        guard fcntl(fd, F_GETFD) >= 0 else { throw ValidationError("--fd \(fd): not an open file descriptor") }
    }

    /// Binds the listening socket at `path`.
    public static func listen(path: String) throws -> OwnedFileDescriptor {
        do { return try UnixSocket.listen(path: path) } catch { throw ValidationError("cannot listen on \(path): \(error)") }
    }
}

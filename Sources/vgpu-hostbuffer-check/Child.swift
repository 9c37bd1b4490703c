import Foundation
import SystemPackage
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// A child process started with posix_spawn and reaped with waitpid. (Foundation's Process
/// learns of a child's exit through a CFSocket wake-up socket on 127.0.0.1, which a guest
/// without a loopback interface cannot make: its `isRunning` then stays true forever.)
final class Child {
    let pid: pid_t
    let commandLine: String
    private var exitStatus: Int32?

    /// Starts `executable` with `arguments`, this process's environment plus `environment`, and
    /// the given fds as its stdin, stdout and stderr. Every other fd of ours should be
    /// close-on-exec (the pipes made by `makePipe` are).
    init(_ executable: String, _ arguments: [String], stdin: Int32, stdout: Int32, stderr: Int32) throws {
        commandLine = ([executable] + arguments).joined(separator: " ")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child starts with no signals blocked and SIGPIPE back to its default.
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let r = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard r == 0 else { throw CheckError("cannot start \(executable): \(String(cString: strerror(r)))") }
        self.pid = pid
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            _ = wait(timeout: 5)
        }
    }

    /// Exit code, or 128 + signal; nil while it runs.
    var status: Int32? {
        if exitStatus == nil { reap(flags: WNOHANG) }
        return exitStatus
    }

    var isRunning: Bool { status == nil }

    private func reap(flags: Int32) {
        var raw: Int32 = 0
        let r = waitpid(pid, &raw, flags)
        if r == pid {
            exitStatus = raw & 0x7f == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        } else if r < 0 && errno == ECHILD {
            exitStatus = -1
        }
    }

    /// Waits up to `timeout` seconds for the exit; its status, or nil if still running.
    @discardableResult
    func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while status == nil {
            if Date() > deadline { return nil }
            usleep(5_000)
        }
        return exitStatus
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; waits for the exit.
    func stop(grace: Double = 5) {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        if wait(timeout: grace) == nil {
            kill(pid, SIGKILL)
            _ = wait(timeout: 10)
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
func makePipe() throws -> (read: Int32, write: Int32) {
    var fds: [Int32] = [-1, -1]
    // pipe2 needs _GNU_SOURCE, which Swift's Glibc does not define: pipe, then FD_CLOEXEC.
    guard pipe(&fds) == 0 else { throw CheckError("pipe: \(String(cString: strerror(errno)))") }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    return (fds[0], fds[1])
}

/// `path` opened for writing (created, truncated), close-on-exec.
func openForWriting(_ path: String) throws -> Int32 {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw CheckError("open \(path): \(String(cString: strerror(errno)))") }
    return fd
}

func openDevNull() -> Int32 { open("/dev/null", O_RDWR | O_CLOEXEC) }

/// Writes all of `text` to `fd`; false if the reader is gone.
func writeAll(_ fd: Int32, _ text: String) -> Bool {
    Array(text.utf8).withUnsafeBytes { (try? writeAllRetryingEINTR(fd, $0)) != nil }
}

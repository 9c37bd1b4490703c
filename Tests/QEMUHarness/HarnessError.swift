import Foundation
import SystemSupport

/// Everything that can go wrong while booting a guest. Each case says what was awaited or
/// missing, so a failing test reads as a diagnosis rather than a bare timeout.
public enum HarnessError: Error, CustomStringConvertible, Sendable {
    /// A required file or program is not there (QEMU, a guest kernel, the backend binary).
    case missing(what: String, path: String, hint: String)
    case spawnFailed(command: String, reason: String)
    /// A wait ran out of time.
    case timeout(waitingFor: String, after: Duration)
    /// A process ended while something was still being waited for.
    case processExited(name: String, status: Int32, waitingFor: String)
    /// The guest reported `VGPU-RESULT ... status=fail`.
    case scenarioFailed(name: String, detail: String)
    case socket(operation: String, path: String, errno: Int32)
    case qmp(command: String, message: String)
    case badImage(String)
    case commandFailed(command: String, status: Int32, output: String)

    public var description: String {
        switch self {
        case let .missing(what, path, hint):
            return "missing \(what) at \(path)" + (hint.isEmpty ? "" : " (\(hint))")
        case let .spawnFailed(command, reason):
            return "could not start \(command): \(reason)"
        case let .timeout(what, after):
            return "timed out after \(after) waiting for \(what)"
        case let .processExited(name, status, what):
            return "\(name) exited (status \(status)) while waiting for \(what)"
        case let .scenarioFailed(name, detail):
            return "guest scenario \(name) failed: \(detail)"
        case let .socket(operation, path, err):
            return "\(operation) \(path): \(String(cString: strerror(err)))"
        case let .qmp(command, message):
            return "QMP \(command): \(message)"
        case let .badImage(message):
            return "bad image: \(message)"
        case let .commandFailed(command, status, output):
            return "\(command) failed with status \(status):\n\(output)"
        }
    }
}

/// A point in time after which a wait gives up (on SystemSupport's monotonic clock).
struct Deadline: Sendable {
    let end: Double
    let timeout: Duration

    init(_ timeout: Duration) {
        self.timeout = timeout
        self.end = monotonicSeconds() + timeout.inSeconds
    }

    var expired: Bool { monotonicSeconds() >= end }

    /// Milliseconds left, clamped to `0...cap` (for `poll`).
    func remainingMilliseconds(cap: Int = 1000) -> Int32 {
        let left = end - monotonicSeconds()
        if left <= 0 { return 0 }
        return Int32(min(Double(cap), max(1, (left * 1000).rounded(.down))))
    }
}

import Logging
import VhostUser
import SystemSupport

/// What a guest error is counted under: the command and the response code it got.
struct GuestErrorKind: Hashable, Sendable {
    let command: UInt32
    let code: UInt32
}

/// Logs what the guest got wrong, rate limited per (command, code) (the guest is untrusted and
/// can send millions of bad commands a second).
final class GuestErrorLog: Sendable {
    private let log: RateLimitedLogger<GuestErrorKind>
    var logger: Logger { log.logger }

    init(logger: Logger, perSecond: Int) {
        log = RateLimitedLogger(logger: logger, perSecond: perSecond, overflowKey: GuestErrorKind(command: 0, code: 0))
    }

    /// Logs `message` at warning level unless this kind is over its budget.
    func report(command: UInt32, code: UInt32, _ message: @autoclosure () -> String) {
        // Unknown command types share one kind: a guest cannot make kinds up.
        let kindCommand = GPUCommand.name(forType: command) == "unknown" ? UInt32.max : command
        log.log(key: GuestErrorKind(command: kindCommand, code: code), message())
    }
}

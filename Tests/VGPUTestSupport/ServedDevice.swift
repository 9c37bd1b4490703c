import Foundation
import Logging
import SystemSupport
import VhostUser

/// A logger for the code under test: silent unless `VGPU_TEST_LOG` is set, then at `verbose`.
public func testLogger(label: String, verbose: Logger.Level = .debug) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = ProcessInfo.processInfo.environment["VGPU_TEST_LOG"] != nil ? verbose : .critical
    return logger
}

/// Runs a VhostUserConnection for `device` on a thread over a socketpair: the device side of
/// every in-process test rig. The frontend speaks on `frontendSocket`.
public final class ServedDevice: @unchecked Sendable {
    public let frontendSocket: OwnedFileDescriptor
    private let done = DispatchSemaphore(value: 0)

    public init(_ device: any VhostUserDevice, logger: Logger = testLogger(label: "test", verbose: .trace),
                backendAckTimeout: Double = 1.0, threadName: String = "test-conn") throws {
        let (a, b) = try UnixSocket.pair()
        frontendSocket = a
        let connection = VhostUserConnection(socket: b, device: device, logger: logger, backendAckTimeout: backendAckTimeout)
        let done = self.done
        startThread(name: threadName) { connection.run(); done.signal() }
    }

    /// Waits for the connection thread to end (after the frontend closes its socket).
    public func waitFinished(timeout: Double = 5) -> Bool { done.wait(timeout: .now() + timeout) == .success }
}

import Logging
import SystemPackage

/// Accepts vhost-user frontends on a listening socket, one at a time (vhost-user is one
/// frontend per socket), each served by a fresh device from `makeDevice`.
public final class VhostUserServer: Sendable {
    private let listener: OwnedFileDescriptor
    private let makeDevice: @Sendable () -> any VhostUserDevice
    private let logger: Logger

    public init(listener: OwnedFileDescriptor, logger: Logger, makeDevice: @escaping @Sendable () -> any VhostUserDevice) {
        self.listener = listener
        self.logger = logger
        self.makeDevice = makeDevice
    }

    /// Serves frontends until accept fails or `shouldContinue` says stop (checked after each one).
    public func serve(shouldContinue: @Sendable () -> Bool = { true }) throws(Errno) {
        repeat {
            let socket = try UnixSocket.accept(listener)
            logger.info("frontend connected")
            VhostUserConnection(socket: socket, device: makeDevice(), logger: logger).run()
        } while shouldContinue()
    }
}

import ArgumentParser
import Logging

/// `--verbose` and the logging set-up of the daemons (vgpu-backend, vgpu-import-device):
/// swift-log lines on standard error, debug with `--verbose`, info otherwise.
public struct LoggingOptions: ParsableArguments {
    @Flag(name: [.long], help: "Log debug messages.")
    public var verbose = false

    public init() {}

    /// Bootstraps swift-log; once per process, before the first `Logger` is made.
    public func bootstrap() {
        let level: Logger.Level = verbose ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

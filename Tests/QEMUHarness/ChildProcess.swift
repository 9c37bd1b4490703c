import Foundation
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// A child process whose stdout and stderr go to a log file, which is killed when this
/// object goes away, and which dies with the test process (`PR_SET_PDEATHSIG` through
/// util-linux `setpriv`, when present).
public final class ChildProcess: @unchecked Sendable {
    public let name: String
    public let executable: String
    public let arguments: [String]
    public let logFile: URL
    private let process: Process

    /// Starts `executable arguments...` with both output streams appended to `logFile`.
    public init(name: String, executable: String, arguments: [String], logFile: URL,
                environment: [String: String]? = nil) throws {
        self.name = name
        self.executable = executable
        self.arguments = arguments
        self.logFile = logFile
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw HarnessError.missing(what: "\(name) executable", path: executable, hint: "")
        }
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let log = try FileHandle(forWritingTo: logFile)
        let process = Process()
        if let setpriv = ChildProcess.setpriv {
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--pdeathsig", "KILL", "--", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = log
        process.standardError = log
        self.process = process
        do {
            // The parent-death signal fires when the *thread* that forked exits, so fork from
            // one thread that lives as long as the process, never from a pool thread.
            try ProcessSpawner.shared.run { try process.run() }
        } catch {
            try? log.close()
            throw HarnessError.spawnFailed(command: commandLine, reason: "\(error)")
        }
        try? log.close()
    }

    deinit { kill() }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    /// The exit status (or terminating signal) once the process has ended.
    public var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    public var commandLine: String {
        ([executable] + arguments).map { $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
    }

    /// The log file's text (both output streams), or its last `lastLines` lines.
    public func log(lastLines: Int? = nil) -> String {
        let text = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        guard let lastLines else { return text }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lastLines).joined(separator: "\n")
    }

    /// Waits for the process to end by itself; returns its status, or nil on timeout.
    public func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = Deadline(timeout)
        while process.isRunning {
            if deadline.expired { return nil }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return process.terminationStatus
    }

    /// Blocking variant of `waitForExit`, for cleanup paths that cannot await.
    public func waitForExitBlocking(timeout: Duration) -> Int32? {
        let deadline = Deadline(timeout)
        while process.isRunning {
            if deadline.expired { return nil }
            usleep(20_000)
        }
        return process.terminationStatus
    }

    /// SIGTERM, then SIGKILL if it has not gone after `grace`. Idempotent; never throws.
    public func kill(grace: Duration = .seconds(3)) {
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        if pid > 0 { Glibc.kill(pid, SIGTERM) }
        if waitForExitBlocking(timeout: grace) == nil, pid > 0 {
            Glibc.kill(pid, SIGKILL)
            _ = waitForExitBlocking(timeout: .seconds(5))
        }
    }

    static let setpriv: String? = {
        for path in ["/usr/bin/setpriv", "/bin/setpriv"] where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return nil
    }()
}

private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

/// One thread that lives as long as the process and runs every spawn (see `ChildProcess`).
final class ProcessSpawner: @unchecked Sendable {
    static let shared = ProcessSpawner()

    private let condition = NSCondition()
    private var work: [() -> Void] = []

    private init() {
        startThread(name: "QEMUHarness.spawn") { [unowned self] in self.loop() }
    }

    private func loop() {
        while true {
            condition.lock()
            while work.isEmpty { condition.wait() }
            let job = work.removeFirst()
            condition.unlock()
            job()
        }
    }

    func run<T>(_ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        condition.lock()
        work.append {
            box.result = Result { try body() }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()  // the semaphore orders the write above before this read
        return try box.result!.get()
    }
}

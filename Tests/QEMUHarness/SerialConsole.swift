import Foundation
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// One line the guest wrote on its serial console, with the `guest/init` protocol parsed.
public struct SerialLine: Sendable, Equatable, CustomStringConvertible {
    /// Position in the console's line list (0-based).
    public let index: Int
    /// The line without its line ending.
    public let text: String
    /// The `VGPU-...` message in the line, if any (kernel messages may share the line).
    public let event: GuestEvent?

    public var description: String { text }
}

/// The result a guest scenario reports: `VGPU-RESULT name=N status=pass|fail detail=...`.
public struct ScenarioResult: Sendable, Equatable {
    public let name: String
    public let passed: Bool
    public let detail: String

    public init(name: String, passed: Bool, detail: String) {
        self.name = name
        self.passed = passed
        self.detail = detail
    }
}

/// The machine-readable messages of `guest/init` (see the comment at its top).
public enum GuestEvent: Sendable, Equatable {
    case modules(loaded: Int, failed: Int, kernel: String)
    case dmesg(String)
    case console(ConsoleGeometry)
    case ready(tag: String)
    case result(ScenarioResult)
    case log(String)
    case done

    /// Parses the first `VGPU-` message in `line`.
    public init?(parsing line: some StringProtocol) {
        guard let start = line.range(of: "VGPU-") else { return nil }
        let message = line[start.lowerBound...]
        func after(_ prefix: String) -> String? {
            message.hasPrefix(prefix) ? String(message.dropFirst(prefix.count)) : nil
        }
        func field(_ name: String, in text: String) -> String? {
            for word in text.split(separator: " ") where word.hasPrefix(name + "=") {
                return String(word.dropFirst(name.count + 1))
            }
            return nil
        }
        if let rest = after("VGPU-READY ") {
            self = .ready(tag: rest.trimmingCharacters(in: .whitespaces))
        } else if let rest = after("VGPU-RESULT ") {
            let head: String, detail: String
            if let d = rest.range(of: " detail=") {
                head = String(rest[..<d.lowerBound]); detail = String(rest[d.upperBound...])
            } else {
                head = rest; detail = ""
            }
            self = .result(ScenarioResult(name: field("name", in: head) ?? "",
                                          passed: field("status", in: head) == "pass", detail: detail))
        } else if let rest = after("VGPU-CONSOLE ") {
            func int(_ name: String) -> Int { Int(field(name, in: rest) ?? "") ?? 0 }
            self = .console(ConsoleGeometry(framebuffer: field("fb", in: rest) ?? "",
                                            width: int("width"), height: int("height"),
                                            rows: int("rows"), columns: int("cols")))
        } else if let rest = after("VGPU-DMESG ") {
            self = .dmesg(rest)
        } else if let rest = after("VGPU-MODULES ") {
            self = .modules(loaded: Int(field("loaded", in: rest) ?? "") ?? -1,
                            failed: Int(field("failed", in: rest) ?? "") ?? -1,
                            kernel: field("kernel", in: rest) ?? "")
        } else if let rest = after("VGPU-LOG ") {
            self = .log(rest)
        } else if message.hasPrefix("VGPU-DONE") {
            self = .done
        } else {
            return nil
        }
    }
}

/// The guest's serial console (ttyS0). QEMU connects to a UNIX socket this object listens on
/// (`-chardev socket,path=...` without `server=on`); a thread copies everything the guest
/// writes into a log file and a line list, and `send` writes to the guest (acknowledgements).
public final class SerialConsole: @unchecked Sendable {
    public let socketPath: String
    public let logFile: URL

    private struct State {
        var lines: [SerialLine] = []
        var partial: [UInt8] = []
        var connected = false
        var closed = false
        var stop = false
        var connection: UnixSocket?
    }
    private let state = Mutex(State())
    private let listener: UnixSocket
    private let log: FileHandle
    private let finished = DispatchSemaphore(value: 0)

    public init(socketPath: String, logFile: URL) throws {
        self.socketPath = socketPath
        self.logFile = logFile
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        self.log = try FileHandle(forWritingTo: logFile)
        self.listener = try UnixSocket.listen(path: socketPath)
        startThread(name: "QEMUHarness.serial") { [self] in self.run() }
    }

    deinit {
        stop()
        try? log.close()
    }

    /// Stops the reader thread and closes the sockets. Idempotent.
    public func stop() {
        let wasStopped = state.withLock { s -> Bool in
            let was = s.stop
            s.stop = true
            return was
        }
        if !wasStopped { _ = finished.wait(timeout: .now() + 2) }
    }

    /// All complete lines so far.
    public var lines: [SerialLine] { state.withLock { $0.lines } }

    /// The whole log as text, including a trailing partial line.
    public var text: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// True once QEMU has connected; false again after it closed the connection.
    public var isConnected: Bool { state.withLock { $0.connected && !$0.closed } }
    /// True once QEMU closed the connection (it exited).
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Writes `line` and a newline to the guest's serial input.
    public func send(_ line: String, timeout: Duration = .seconds(5)) throws {
        guard let connection = state.withLock({ $0.connection }) else {
            throw HarnessError.socket(operation: "send (QEMU not connected)", path: socketPath, errno: ENOTCONN)
        }
        try connection.write(Array((line + "\n").utf8), timeout: timeout)
    }

    /// The first line at or after `index` that satisfies `predicate`, or nil if none yet.
    public func firstLine(from index: Int = 0, where predicate: (SerialLine) -> Bool) -> SerialLine? {
        state.withLock { s in
            guard index < s.lines.count else { return nil }
            return s.lines[max(0, index)...].first(where: predicate)
        }
    }

    private func run() {
        defer {
            state.withLock { $0.connection?.close(); $0.connection = nil; $0.closed = true }
            listener.close()
            finished.signal()
        }
        var connection: UnixSocket?
        while connection == nil {
            if state.withLock({ $0.stop }) { return }
            connection = try? listener.accept(timeoutMilliseconds: 200)
        }
        listener.close()
        state.withLock { $0.connection = connection; $0.connected = true }
        while !state.withLock({ $0.stop }) {
            guard let bytes = try? connection!.read(timeoutMilliseconds: 200) else { break }
            if !bytes.isEmpty { consume(bytes) }
        }
        flushPartial()
    }

    private func consume(_ bytes: [UInt8]) {
        log.write(Data(bytes))
        state.withLock { s in
            for byte in bytes {
                if byte == UInt8(ascii: "\n") {
                    append(&s)
                } else if byte != UInt8(ascii: "\r") && byte != 0 {
                    s.partial.append(byte)
                }
            }
        }
    }

    private func flushPartial() {
        state.withLock { s in if !s.partial.isEmpty { append(&s) } }
    }

    private func append(_ s: inout State) {
        let text = String(decoding: s.partial, as: UTF8.self)
        s.partial.removeAll(keepingCapacity: true)
        s.lines.append(SerialLine(index: s.lines.count, text: text, event: GuestEvent(parsing: text)))
    }
}

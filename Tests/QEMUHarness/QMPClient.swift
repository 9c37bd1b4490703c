import Foundation

/// A QEMU Machine Protocol client over a UNIX socket (`-qmp unix:PATH,server=on,wait=off`).
/// Calls are synchronous with a timeout each; asynchronous events are kept in `events`.
public final class QMPClient: @unchecked Sendable {
    public let path: String
    private let socket: UnixSocket
    private var buffer: [UInt8] = []
    private var nextID = 1
    private let lock = NSLock()
    /// Events (`{"event": ...}`) received so far, in order, as their JSON objects.
    public private(set) var events: [[String: Any]] = []
    /// The greeting's `QMP.version.qemu` object, e.g. `["major": 10, "minor": 0, "micro": 2]`.
    public private(set) var version: [String: Any] = [:]

    /// Connects (retrying until QEMU has created the socket), reads the greeting and
    /// negotiates capabilities.
    public init(path: String, timeout: Duration = .seconds(30)) throws {
        self.path = path
        let deadline = Deadline(timeout)
        self.socket = try UnixSocket.connect(path: path, timeout: timeout)
        let greeting = try readMessage(deadline: deadline, what: "QMP greeting")
        guard let qmp = greeting["QMP"] as? [String: Any] else {
            throw HarnessError.qmp(command: "greeting", message: "unexpected \(greeting)")
        }
        version = ((qmp["version"] as? [String: Any])?["qemu"] as? [String: Any]) ?? [:]
        _ = try execute("qmp_capabilities", timeout: timeout)
    }

    deinit { socket.close() }

    public func close() { socket.close() }

    /// Runs `command` and returns its `return` value; throws on `error` or timeout.
    @discardableResult
    public func execute(_ command: String, arguments: [String: Any]? = nil,
                        timeout: Duration = .seconds(30)) throws -> Any {
        lock.lock(); defer { lock.unlock() }
        let deadline = Deadline(timeout)
        let id = nextID
        nextID += 1
        var message: [String: Any] = ["execute": command, "id": id]
        if let arguments { message["arguments"] = arguments }
        var data = try JSONSerialization.data(withJSONObject: message)
        data.append(UInt8(ascii: "\n"))
        try socket.write(Array(data), timeout: timeout)
        while true {
            let reply = try readMessage(deadline: deadline, what: "reply to \(command)")
            if reply["event"] != nil { events.append(reply); continue }
            guard (reply["id"] as? Int) == id else { continue }
            if let error = reply["error"] as? [String: Any] {
                throw HarnessError.qmp(command: command,
                                       message: "\(error["class"] ?? "error"): \(error["desc"] ?? "")")
            }
            return reply["return"] ?? [:]
        }
    }

    /// `screendump` into `file` (`format` "ppm" or "png"); `device` is the QOM id of the
    /// display device (needed for `head`).
    public func screendump(to file: URL, format: String = "ppm", device: String? = nil, head: Int? = nil,
                           timeout: Duration = .seconds(30)) throws {
        var arguments: [String: Any] = ["filename": file.path, "format": format]
        if let device { arguments["device"] = device }
        if let head { arguments["head"] = head }
        try execute("screendump", arguments: arguments, timeout: timeout)
    }

    /// `quit`; QEMU may close the socket before or after replying, both are fine.
    public func quit(timeout: Duration = .seconds(5)) {
        _ = try? execute("quit", timeout: timeout)
    }

    /// Reads one JSON object (one line).
    private func readMessage(deadline: Deadline, what: String) throws -> [String: Any] {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x0d }) { continue }
                guard let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                    throw HarnessError.qmp(command: what, message: "not JSON: \(String(decoding: line, as: UTF8.self))")
                }
                return object
            }
            if deadline.expired { throw HarnessError.timeout(waitingFor: "QMP \(what)", after: deadline.timeout) }
            guard let bytes = try socket.read(timeoutMilliseconds: deadline.remainingMilliseconds(cap: 200)) else {
                throw HarnessError.qmp(command: what, message: "QEMU closed the QMP socket")
            }
            buffer += bytes
        }
    }
}

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A scratch folder for sockets and logs (a tmpfs in the guest).
struct WorkDirectory {
    let path: String

    init(root: String) throws {
        var template = Array("\(root)/vgpu-hostbuffer-check-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw CheckError("mkdtemp in \(root): \(String(cString: strerror(errno)))")
        }
        path = String(cString: dir)
    }

    func file(_ name: String) -> String { "\(path)/\(name)" }
}

struct CheckError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Runs a program to completion (outputs into files, so nothing blocks on a full pipe).
func runCapture(_ executable: String, _ arguments: [String], in work: WorkDirectory, timeout: Double = 60)
    -> (status: Int32, out: String, err: String)
{
    let tag = "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    let outPath = work.file("run-\(tag).out"), errPath = work.file("run-\(tag).err")
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    defer { unlink(outPath); unlink(errPath) }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    p.standardInput = FileHandle.nullDevice
    guard let out = FileHandle(forWritingAtPath: outPath), let err = FileHandle(forWritingAtPath: errPath) else {
        return (-1, "", "cannot open output files in \(work.path)")
    }
    p.standardOutput = out
    p.standardError = err
    do { try p.run() } catch { return (-1, "", "cannot run \(executable): \(error)") }
    try? out.close(); try? err.close()
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning {
        if Date() > deadline {
            p.terminate()
            p.waitUntilExit()
            return (-1, read(outPath), "timed out after \(Int(timeout))s; " + read(errPath))
        }
        usleep(10_000)
    }
    p.waitUntilExit()
    return (p.terminationStatus, read(outPath), read(errPath))
}

func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

/// Lines from a pipe, with a timeout per line.
final class LineReader {
    let fd: Int32
    private var buffer: [UInt8] = []
    private(set) var atEOF = false

    init(fd: Int32) { self.fd = fd }

    /// The next line without its newline; nil at EOF or after `timeout` seconds.
    func next(timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            if atEOF { return nil }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(min(left, 1) * 1000) + 1)
            if r < 0 { if errno == EINTR { continue }; atEOF = true; return nil }
            if r == 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR || errno == EAGAIN { continue }; atEOF = true; return nil }
            if n == 0 { atEOF = true; continue }
            buffer += chunk[0..<n]
        }
    }
}

/// `vgpuctl --socket C export UUID --exec <this program> consume`, talked to over its stdin/stdout.
final class ExportedConsumer {
    let process = Process()
    let toChild = Pipe()
    let fromChild = Pipe()
    let reader: LineReader
    let errPath: String
    /// The consumer's INFO object (nil if vgpuctl failed before exec, or the consumer died).
    private(set) var info: [String: Any]?
    private(set) var startError: String?

    init(vgpuctl: String, controlSocket: String, uuid: String, work: WorkDirectory, label: String, timeout: Double = 60) {
        errPath = work.file("consumer-\(label).err")
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        reader = LineReader(fd: fromChild.fileHandleForReading.fileDescriptor)
        process.executableURL = URL(fileURLWithPath: vgpuctl)
        process.arguments = ["--socket", controlSocket, "export", uuid, "--exec", ownExecutable(), "consume"]
        process.standardInput = toChild
        process.standardOutput = fromChild
        process.standardError = FileHandle(forWritingAtPath: errPath)
        do {
            try process.run()
        } catch {
            startError = "cannot run \(vgpuctl): \(error)"
            return
        }
        try? fromChild.fileHandleForWriting.close()
        try? toChild.fileHandleForReading.close()
        guard let line = reader.next(timeout: timeout) else {
            startError = "no INFO line from the consumer within \(Int(timeout))s; vgpuctl/consumer stderr: \(stderrText)"
                + (process.isRunning ? "" : " (exit status \(process.terminationStatus))")
            return
        }
        guard line.hasPrefix("INFO "),
              let object = try? JSONSerialization.jsonObject(with: Data(line.dropFirst(5).utf8)) as? [String: Any]
        else {
            startError = "unexpected first line from the consumer: \(line); stderr: \(stderrText)"
            return
        }
        info = object
    }

    var stderrText: String {
        // Give a process that just failed a moment to finish writing.
        if process.isRunning { usleep(100_000) }
        return oneLine(read(errPath).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func string(_ key: String) -> String { (info?[key] as? String) ?? "" }
    func number(_ key: String) -> UInt64? { (info?[key] as? NSNumber)?.uint64Value }
    var mapped: Bool { (info?["mapped"] as? Bool) ?? false }

    /// Sends one request and returns (ok, detail).
    func ask(_ request: String, timeout: Double = 60) -> (ok: Bool, detail: String) {
        guard info != nil else { return (false, startError ?? "no consumer") }
        let bytes = Data((request + "\n").utf8)
        do { try toChild.fileHandleForWriting.write(contentsOf: bytes) } catch {
            return (false, "consumer gone (\(error)); stderr: \(stderrText)")
        }
        guard let reply = reader.next(timeout: timeout) else {
            return (false, "no reply to \(request) within \(Int(timeout))s; stderr: \(stderrText)")
        }
        if reply.hasPrefix("OK ") { return (true, String(reply.dropFirst(3))) }
        return (false, reply.hasPrefix("BAD ") ? String(reply.dropFirst(4)) : reply)
    }

    /// EXIT, then waits for the process (killed after `timeout`).
    func finish(timeout: Double = 10) {
        if info != nil, process.isRunning { _ = try? toChild.fileHandleForWriting.write(contentsOf: Data("EXIT\n".utf8)) }
        try? toChild.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}

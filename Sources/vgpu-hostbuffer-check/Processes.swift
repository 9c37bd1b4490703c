import Foundation
import SystemPackage
import SystemSupport
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
    defer { unlink(outPath); unlink(errPath) }
    let null = openDevNull()
    defer { close(null) }
    let child: Child
    do {
        let out = try openForWriting(outPath), err = try openForWriting(errPath)
        defer { close(out); close(err) }
        child = try Child(executable, arguments, stdin: null, stdout: out, stderr: err)
    } catch {
        return (-1, "", "\(error)")
    }
    guard let status = child.wait(timeout: timeout) else {
        child.stop(grace: 2)
        return (-1, read(outPath), "timed out after \(Int(timeout))s; " + read(errPath))
    }
    return (status, read(outPath), read(errPath))
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
        let deadline = monotonicSeconds() + timeout
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            if atEOF { return nil }
            if monotonicSeconds() >= deadline { return nil }
            guard let ready = try? Poll.wait(fd, events: Int16(POLLIN), timeout: min(deadline - monotonicSeconds(), 1)) else {
                atEOF = true
                return nil
            }
            if !ready { continue }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let read = chunk.withUnsafeMutableBytes { b in Result { () throws(Errno) in try readRetryingEINTR(fd, into: b) } }
            guard case let .success(n) = read else {
                if case .failure(.wouldBlock) = read { continue }
                atEOF = true
                return nil
            }
            if n == 0 { atEOF = true; continue }
            buffer += chunk[0..<n]
        }
    }
}

/// `vgpuctl --socket C export UUID --exec <this program> consume`, talked to over its stdin/stdout.
final class ExportedConsumer {
    private var child: Child?
    private var toChild: Int32 = -1
    private var reader: LineReader?
    let errPath: String
    /// The consumer's INFO object (nil if vgpuctl failed before exec, or the consumer died).
    private(set) var info: [String: Any]?
    private(set) var startError: String?

    init(vgpuctl: String, controlSocket: String, uuid: String, work: WorkDirectory, label: String, timeout: Double = 60) {
        errPath = work.file("consumer-\(label).err")
        do {
            let input = try makePipe(), output = try makePipe()
            let err = try openForWriting(errPath)
            defer { close(input.read); close(output.write); close(err) }
            toChild = input.write
            reader = LineReader(fd: output.read)
            child = try Child(vgpuctl, ["--socket", controlSocket, "export", uuid, "--exec", ownExecutable(), "consume"],
                              stdin: input.read, stdout: output.write, stderr: err)
        } catch {
            startError = "\(error)"
            return
        }
        guard let line = reader?.next(timeout: timeout) else {
            startError = "no INFO line from the consumer within \(Int(timeout))s; vgpuctl/consumer stderr: \(stderrText)"
                + (child?.status.map { " (exit status \($0))" } ?? "")
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

    deinit {
        finish()
        if let fd = reader?.fd { close(fd) }
    }

    var stderrText: String {
        // Give a process that just failed a moment to finish writing.
        if child?.isRunning == true { usleep(100_000) }
        return oneLine(read(errPath).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func string(_ key: String) -> String { (info?[key] as? String) ?? "" }
    func number(_ key: String) -> UInt64? { (info?[key] as? NSNumber)?.uint64Value }
    var mapped: Bool { (info?["mapped"] as? Bool) ?? false }

    /// Sends one request and returns (ok, detail).
    func ask(_ request: String, timeout: Double = 60) -> (ok: Bool, detail: String) {
        guard info != nil, let reader else { return (false, startError ?? "no consumer") }
        guard toChild >= 0, writeAll(toChild, request + "\n") else {
            return (false, "consumer gone; stderr: \(stderrText)")
        }
        guard let reply = reader.next(timeout: timeout) else {
            return (false, "no reply to \(request) within \(Int(timeout))s; stderr: \(stderrText)")
        }
        if reply.hasPrefix("OK ") { return (true, String(reply.dropFirst(3))) }
        return (false, reply.hasPrefix("BAD ") ? String(reply.dropFirst(4)) : reply)
    }

    /// EXIT, then waits for the process (killed after `timeout`). Idempotent.
    func finish(timeout: Double = 10) {
        if toChild >= 0 {
            if info != nil { _ = writeAll(toChild, "EXIT\n") }
            close(toChild)
            toChild = -1
        }
        if let child, child.wait(timeout: timeout) == nil { child.stop(grace: 2) }
    }
}

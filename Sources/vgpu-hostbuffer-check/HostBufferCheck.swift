import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// vgpu-hostbuffer-check: proves real host dmabufs where the kernel can make them.
///
/// Runs inside a TCG guest on a kernel with udmabuf, dma-heaps and vgem (Debian's 6.12; the
/// `hostbuffers` scenario of guest/init) as root, and plays the host: it starts the real
/// `vgpu-backend`, drives it as the vhost-user frontend (memfd guest RAM, sealed like QEMU's),
/// and looks the results up with the real `vgpuctl`. Every check prints one serial-protocol line,
/// `VGPU-RESULT name=hostbuffers.<check> status=pass|fail|unsupported detail=...`, then one
/// `name=hostbuffers` summary.
///
/// `consume` is the other end of `vgpuctl export UUID --exec`: it maps the fd it inherits and
/// answers the parent's questions about its contents over stdin/stdout.
@main
struct HostBufferCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpu-hostbuffer-check",
        abstract: "Check vgpu-backend's host buffers (udmabuf, dma-heap, DRM dumb) on a kernel that has them.",
        subcommands: [RunChecks.self, Consume.self, ConsumerSelfTest.self],
        defaultSubcommand: RunChecks.self)
}

/// The folder this program lives in (the guest's /bin): where vgpu-backend and vgpuctl are by default.
func ownDirectory() -> String {
    (ownExecutable() as NSString).deletingLastPathComponent
}

func ownExecutable() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}

/// One line to stdout in a single write (stdout is the serial console in the guest).
func emit(_ line: String) {
    _ = writeAll(1, line + "\n")
}

/// Check results, printed as they are made, counted for the summary.
final class Reporter {
    private(set) var passed: [String] = []
    private(set) var failed: [String] = []
    private(set) var unsupported: [String] = []
    private var reported = Set<String>()

    static let scenario = "hostbuffers"

    func result(_ name: String, _ ok: Bool, _ detail: String) {
        record(name, ok ? "pass" : "fail", detail)
    }

    func record(_ name: String, _ status: String, _ detail: String) {
        let full = "\(Self.scenario).\(name)"
        guard reported.insert(full).inserted else { return }
        switch status {
        case "pass": passed.append(full)
        case "unsupported": unsupported.append(full)
        default: failed.append(full)
        }
        emit("VGPU-RESULT name=\(full) status=\(status) detail=\(oneLine(detail))")
    }

    func log(_ text: String) {
        for line in text.split(separator: "\n") { emit("VGPU-LOG \(line)") }
    }

    /// Fails every name of `names` not reported yet (a group stopped early).
    func failRemaining(_ names: [String], _ why: String) {
        for n in names where !reported.contains("\(Self.scenario).\(n)") { result(n, false, "not reached: \(why)") }
    }

    func summary() {
        let status = failed.isEmpty ? "pass" : "fail"
        var detail = "\(passed.count) passed, \(failed.count) failed, \(unsupported.count) unsupported"
        if !failed.isEmpty { detail += "; failed: " + failed.joined(separator: ",") }
        emit("VGPU-RESULT name=\(Self.scenario) status=\(status) detail=\(detail)")
    }
}

func oneLine(_ s: String) -> String {
    String(s.map { $0 == "\n" || $0 == "\r" ? " " : $0 }.prefix(600))
}

// MARK: the test pattern

/// B8G8R8X8 bytes of a width×height image for `seed`: every pixel differs from its neighbours and
/// from every other seed's, so misplaced rows, stale copies and old contents show. X is 0xFF.
func patternBytes(width: Int, height: Int, seed: Int) -> [UInt8] {
    var p = [UInt8](repeating: 0, count: width * height * 4)
    for y in 0..<height {
        for x in 0..<width {
            let i = (y * width + x) * 4
            p[i] = UInt8(truncatingIfNeeded: x &+ seed &* 37)
            p[i + 1] = UInt8(truncatingIfNeeded: y &+ seed &* 11)
            p[i + 2] = UInt8(truncatingIfNeeded: (x ^ y) &+ seed &* 73)
            p[i + 3] = 0xFF
        }
    }
    return p
}

import Foundation
import QEMUHarness
import Testing

/// Real dmabufs where they exist: this host's kernel has no dmabuf exporter, Debian's 6.12 guest
/// kernel has udmabuf and dma-heaps built in and vgem as a module. The test boots it under TCG
/// with no GPU device and an initramfs holding the static `vgpu-backend`, `vgpuctl` and
/// `vgpu-hostbuffer-check` (guest/init's `hostbuffers` scenario, vgem loaded); inside, the check
/// program plays the host: it starts the backend, drives it as the vhost-user frontend, exports
/// through `vgpuctl export --exec` to a consumer that maps the fd, and prints one
/// `VGPU-RESULT name=hostbuffers.<check>` line per check. Every check listed here must pass; a
/// missing line is a failure. The programs come from `VGPU_GUEST_BACKEND`, `VGPU_GUEST_VGPUCTL`,
/// `VGPU_HOSTBUFFER_CHECK` (scripts/test), else `.build-guest/release/`.
@Suite("QEMU guests: host buffers on a kernel with dmabufs", .serialized)
struct HostBufferVMTests {
    /// What vgpu-hostbuffer-check reports (Sources/vgpu-hostbuffer-check/RunChecks.swift), in order.
    static let checks = [
        // 1. vgpu-backend check-host --json finds each dmabuf kind.
        "check-host.udmabuf", "check-host.dma-heap", "check-host.drm-dumb",
        // 2-4. --host-buffers auto: a page-aligned backing in two non-adjacent ranges is a udmabuf over
        // the guest's own pages; a consumer of `vgpuctl export` sees the guest's writes with no command.
        "zero-copy.setup", "zero-copy.show", "zero-copy.export", "zero-copy.exp-name", "zero-copy.pattern1", "zero-copy.pattern2",
        // 5. a backing 64 bytes into a page: a udmabuf over a shadow, updated on TRANSFER_TO_HOST_2D.
        "shadow.show", "shadow.export", "shadow.before-transfer", "shadow.after-transfer",
        // 8. --dmabuf-scanout on: SET_SCANOUT + RESOURCE_FLUSH reach the display peer as DMABUF_SCANOUT(2).
        "scanout",
        // 7. after RESOURCE_UNREF the UUID is gone, the consumer's mapping still reads.
        "unref.show", "unref.mapping",
        // 6. --host-buffers heap and drm.
        "heap.show", "heap.export", "heap.content",
        "drm.show", "drm.export", "drm.content",
    ].map { "hostbuffers.\($0)" }

    struct Failed: Error, CustomStringConvertible { let description: String }

    @Test("udmabuf, dma-heap and vgem buffers exported by vgpu-backend inside a 6.12 guest", .timeLimit(.minutes(15)))
    func hostBuffersInsideAGuest() async throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let backend = try environment.guestProgram("vgpu-backend", variable: "VGPU_GUEST_BACKEND")
        let vgpuctl = try environment.guestProgram("vgpuctl", variable: "VGPU_GUEST_VGPUCTL")
        let check = try environment.guestProgram("vgpu-hostbuffer-check", variable: "VGPU_HOSTBUFFER_CHECK")
        var options = try await environment.guestOptions(
            kernel: "6.12", scenario: "hostbuffers", backend: BackendCommand(executable: backend), modules: ["vgem"],
            binaries: [(backend, "/bin/vgpu-backend"), (vgpuctl, "/bin/vgpuctl"), (check, "/bin/vgpu-hostbuffer-check")])
        options.gpuDevice = false   // the backend runs inside the guest, for the check program's own frontend
        options.memoryMiB = 1024    // the initramfs unpacks three static Swift programs (~80 MB each)
        options.label = "6.12-hostbuffers"
        let started = ContinuousClock.now
        var results: [String: ScenarioResult] = [:]
        var bootTime: Duration = .zero
        do {
            try await GuestSession.run(options) { guest in
                let modules = try await guest.waitForEvent("VGPU-MODULES", timeout: .seconds(300)) {
                    if case .modules = $0 { return true } else { return false }
                }
                bootTime = ContinuousClock.now - guest.launchedAt
                if case let .modules(_, failed, _)? = modules.event, failed != 0 {
                    throw Failed(description: "\(failed) modules failed to load")
                }
                try await guest.waitForEvent("VGPU-DONE", timeout: .seconds(600), allowFailedScenario: true) { $0 == .done }
                for line in guest.serialLines {
                    if case let .result(r)? = line.event { results[r.name] = r }
                }
                let problems = Self.problems(results)
                // Throwing keeps the work folder and brings the serial log along.
                if !problems.isEmpty { throw Failed(description: problems.joined(separator: "\n")) }
                #expect(try await guest.waitForPowerOff() == 0)
            }
        } catch let error as GuestSessionError {
            // The diagnostics end with the serial log (every VGPU-RESULT line).
            Issue.record("hostbuffers guest: \(error.underlying)\n\(error.diagnostics)")
        }
        for name in Self.checks {
            if let r = results[name] { print("  \(r.passed ? "pass" : "FAIL") \(name): \(r.detail)") } else { print("  MISSING \(name)") }
        }
        print("hostbuffers on 6.12: modules loaded after \(bootTime), whole run \(ContinuousClock.now - started)")
    }

    /// Every expected check present and passed, and the summary line passed.
    static func problems(_ results: [String: ScenarioResult]) -> [String] {
        var out: [String] = []
        for name in checks {
            guard let r = results[name] else { out.append("\(name): no VGPU-RESULT line"); continue }
            if !r.passed { out.append("\(name) failed: \(r.detail)") }
        }
        if let summary = results["hostbuffers"] {
            if !summary.passed { out.append("summary: \(summary.detail)") }
        } else {
            out.append("hostbuffers: no summary line (the check program did not finish)")
        }
        return out
    }

    @Test("without a GPU device QEMU gets no vhost-user-gpu-pci and no backend socket")
    func noGPUDeviceArguments() throws {
        let kernel = try HarnessEnvironment(locatingFrom: #filePath).kernel("6.12")
        var options = GuestOptions(qemu: "/qemu", kernel: kernel, initramfs: URL(fileURLWithPath: "/initrd"),
                                   backend: BackendCommand(executable: "/vgpu-backend"), scenario: "hostbuffers")
        let with = options.qemuArguments(backendSocket: "/b.sock", serialSocket: "/s.sock", qmpSocket: "/q.sock")
        #expect(with.contains { $0.hasPrefix("vhost-user-gpu-pci") } && with.contains("socket,id=vgpu,path=/b.sock"))
        options.gpuDevice = false
        let without = options.qemuArguments(backendSocket: "/b.sock", serialSocket: "/s.sock", qmpSocket: "/q.sock")
        #expect(!without.contains { $0.contains("vhost-user-gpu") || $0.contains("/b.sock") })
        #expect(without.contains("socket,id=serial0,path=/s.sock") && without.contains("unix:/q.sock,server=on,wait=off"))
    }

    @Test("a missing or failed check is a failure")
    func problemsAreFound() {
        var results: [String: ScenarioResult] = [:]
        for name in Self.checks + ["hostbuffers"] { results[name] = ScenarioResult(name: name, passed: true, detail: "") }
        #expect(Self.problems(results).isEmpty)
        results["hostbuffers.zero-copy.pattern2"] = ScenarioResult(name: "hostbuffers.zero-copy.pattern2", passed: false, detail: "pixel (0,0)")
        results["hostbuffers.drm.content"] = nil
        let found = Self.problems(results)
        #expect(found.count == 2)
        #expect(found.contains { $0.hasPrefix("hostbuffers.drm.content: no VGPU-RESULT") })
    }
}

import Foundation
import QEMUHarness
import Testing

/// Cross-device import in real guests: a second virtio device (the importer, on QEMU's
/// vhost-user-i2c-pci transport, served by `vgpu-import-device`) imports buffers the guest's
/// virtio-gpu driver exported, by UUID, through the guest module `vgpu_import` (guest/vgpu-import).
///
/// One boot per kernel runs `import`, `import-errors` and `import-multigpu` (vgpu-guest-test,
/// Sources/vgpu-guest-test/ImportScenarios.swift) with two vhost-user-gpu-pci devices served by
/// one backend process and the importer next to them. While the guest holds its imports the
/// host reads `vgpuctl list --json` and checks the importer is listed as holder of each, and
/// that each multi-GPU UUID sits on the device the importer reported.
@Suite("QEMU guests: cross-device import", .serialized)
struct ImportGuestTests {
    static let scenarios = ["import", "import-errors", "import-multigpu"]

    @Test("guest import scenario", .timeLimit(.minutes(5)), arguments: scenarios, ["6.1", "6.12"])
    func scenario(_ scenario: String, kernel: String) async throws {
        let run = try await ImportRuns.shared.run(kernel: kernel)
        if let error = run.error {
            Issue.record("the import guest on \(kernel) against \(run.backend) failed: \(error)\(run.diagnosticsSuffix)")
            return
        }
        let outcome = run.outcome(scenario)
        #expect(!outcome.results.isEmpty, "no VGPU-RESULT lines for \(scenario) on \(kernel)\(run.diagnosticsSuffix)")
        for result in outcome.allChecks where !ImportRuns.allowed(result, run: run) {
            Issue.record("\(kernel) \(run.backend): \(result.name) status=\(result.status) detail=\(result.detail)\(run.diagnosticsSuffix)")
        }
        if run.isVgpuBackend {
            switch scenario {
            case "import":
                #expect(outcome.results.filter { $0.name.hasPrefix("import.buffer") && $0.status == "pass" }.count == 5,
                        "five buffers imported with matching digests")
                #expect(outcome.hostChecks.contains { $0.name == "import.vgpuctl_holders" && $0.status == "pass" },
                        "host checks: \(outcome.hostChecks)")
            case "import-errors":
                #expect(outcome.status("import-errors.revoked") == "pass")
                #expect(outcome.status("import-errors.not_virtio") == (kernel == "6.1" ? "unsupported" : "pass"),
                        "6.12 has /dev/udmabuf: a guest udmabuf must be refused with EINVAL")
            case "import-multigpu":
                #expect(outcome.status("import-multigpu.devices") == "pass")
                #expect(outcome.hostChecks.contains { $0.name == "import-multigpu.vgpuctl_devices" && $0.status == "pass" },
                        "host checks: \(outcome.hostChecks)")
            default: break
            }
        }
        let verdict = run.verdict(scenario, allowed: { ImportRuns.allowed($0, run: run) })
        print("guest \(scenario) on \(kernel) against \(run.backend): \(verdict), \(outcome.results.count) checks, boot run \(run.duration)")
        for check in outcome.hostChecks { print("  host: \(check.name) \(check.status): \(check.detail)") }
        if scenario == "import", let timing = run.timingLine { print("  \(timing)") }
        ImportRuns.appendCompareLine(run: run, kernel: kernel, scenario: scenario, verdict: verdict, outcome: outcome)
    }

    /// Path (a), QEMU's shared-object table: records what this QEMU answers to the importer's
    /// BACKEND_SHARED_OBJECT_LOOKUP of a UUID vgpu-backend ADDed. Measured with QEMU 10.0.2:
    /// -22 (EINVAL), no fd (its table keeps a dangling key: hw/display/virtio-dmabuf.c). When this
    /// fails, QEMU changed: update the README's "QEMU's shared-object table" section and this test.
    /// With `VGPU_QEMU_SHARED_OBJECTS_FIXED=1` (a QEMU built by qemu/build-patched-qemu, given in
    /// `VGPU_QEMU`) the table works: the LOOKUP is answered 0 with the fd vgpu-backend gave QEMU
    /// (GET_SHARED_OBJECT), and the imports say `path=shared-object`.
    @Test("QEMU's shared-object table answers the importer's LOOKUP as recorded", .timeLimit(.minutes(5)))
    func sharedObjectPath() async throws {
        let run = try await ImportRuns.shared.run(kernel: "6.12")
        guard run.isVgpuBackend else { return }  // QEMU's C backend adds no UUIDs at all
        if let error = run.error { Issue.record("the import guest failed: \(error)\(run.diagnosticsSuffix)"); return }
        let info = run.outcome("import").info
        let status = info["so_status"], path = info["path"]
        if ImportRuns.sharedObjectsFixed {
            #expect(status == "0" && path == "shared-object",
                    """
                    VGPU_QEMU_SHARED_OBJECTS_FIXED=1: QEMU's shared-object LOOKUP answered so_status=\(status ?? "none") \
                    (path \(path ?? "none")); expected 0 with path shared-object (qemu/patches applied).
                    """)
            return
        }
        #expect(status == "-22" && path == "control-socket",
                """
                QEMU's shared-object LOOKUP answered so_status=\(status ?? "none") (path \(path ?? "none")); \
                recorded: -22 (EINVAL) with path control-socket. If QEMU now answers 0 and path is shared-object, \
                QEMU's table works: update README ("QEMU's shared-object table") and docs/importer-protocol.md.
                """)
    }
}

/// Boots each kernel once with the three import scenarios and remembers the outcome.
actor ImportRuns {
    static let shared = ImportRuns()
    /// `VGPU_QEMU_SHARED_OBJECTS_FIXED=1`: `VGPU_QEMU` is a QEMU whose shared-object table works
    /// (qemu/build-patched-qemu), so path (a) answers the importer.
    static var sharedObjectsFixed: Bool { ProcessInfo.processInfo.environment["VGPU_QEMU_SHARED_OBJECTS_FIXED"] == "1" }
    private var runs: [String: Task<GuestProgramRun, Never>] = [:]

    /// An `unsupported` is honest where the backend has no UUIDs (QEMU's C backend), or where
    /// the guest kernel lacks /dev/udmabuf (6.1) for the non-virtio dma-buf check.
    static func allowed(_ check: CheckLine, run: GuestProgramRun) -> Bool {
        switch check.status {
        case "pass": return true
        case "unsupported":
            if !run.isVgpuBackend { return check.name.hasSuffix(".uuid") }
            return check.name == "import-errors.not_virtio" && run.kernel == "6.1"
        default: return false
        }
    }

    func run(kernel: String) async throws -> GuestProgramRun {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let backend = try environment.backend()
        let key = "\(kernel) \(backend.executable)"
        if let task = runs[key] { return await task.value }
        let program = try environment.guestTestProgram()
        let kernelInfo = try environment.kernel(kernel)
        let module = try await environment.importModule(for: kernelInfo)
        var options = try await environment.guestOptions(
            kernel: kernel, scenario: ImportGuestTests.scenarios.joined(separator: ","), backend: backend,
            binaries: [(program, "/bin/vgpu-guest-test")], initramfsOptions: ["--ko", module])
        options.label = "\(kernel)-\(backend.label)-import"
        options.extraGPUDevices = 1
        var importerArguments: [String] = []
        var controlSocket: String?
        if backend.label == "vgpu-backend" {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-ctl-\(UUID().uuidString.prefix(8)).sock").path
            options.backend.extraArguments += ["--control-socket", path]
            importerArguments += ["--control-socket", path]
            controlSocket = path
        }
        options.importer = BackendCommand(executable: try environment.importDevice(), extraArguments: importerArguments)
        let task = Task { [options, controlSocket] in
            defer { if let controlSocket { try? FileManager.default.removeItem(atPath: controlSocket) } }
            return await Self.boot(options, controlSocket: controlSocket)
        }
        runs[key] = task
        return await task.value
    }

    private static func boot(_ options: GuestOptions, controlSocket: String?) async -> GuestProgramRun {
        await GuestProgramRuns.session(options, drive: { guest, box in try await drive(guest, box, controlSocket: controlSocket) },
                                       failed: { run in
                                           run.outcomes.values.contains { $0.allChecks.contains { !allowed($0, run: run) } }
                                       })
    }

    /// Follows the guest; at `VGPU-READY import-held` / `import-multigpu` reads vgpuctl.
    private static func drive(_ guest: GuestSession, _ box: GuestProgramRuns.Box, controlSocket: String?) async throws {
        while true {
            let line = try await guest.waitForLine("VGPU-READY or VGPU-DONE", timeout: .seconds(180), allowFailedScenario: true) {
                $0.text.contains("VGPU-READY ") || $0.text.contains("VGPU-DONE")
            }
            GuestProgramRuns.collect(guest.serialLines, into: &box.run)
            guard case let .ready(tag)? = line.event else { break }
            if let controlSocket {
                switch tag {
                case "import-held":
                    box.run.outcomes["import", default: ScenarioOutcome()].hostChecks.append(
                        checkHolders(box.run.outcome("import").info, controlSocket: controlSocket))
                case "import-multigpu":
                    box.run.outcomes["import-multigpu", default: ScenarioOutcome()].hostChecks.append(
                        checkDevices(box.run.outcome("import-multigpu").info, controlSocket: controlSocket))
                default: break
                }
            }
            try guest.acknowledge(tag)
        }
        _ = try await guest.waitForPowerOff(timeout: .seconds(60))
        GuestProgramRuns.collect(guest.serialLines, into: &box.run)
    }

    /// Resource rows of `vgpuctl list --json`: (device, id) -> row.
    static func listResources(controlSocket: String) -> (rows: [String: [String: Any]], error: String?) {
        let (status, output) = vgpuctl(["list", "--socket", controlSocket, "--json"])
        guard status == 0, let json = try? JSONSerialization.jsonObject(with: Data(output.utf8)) else {
            return ([:], "vgpuctl list (status \(status)): \(output.prefix(400))")
        }
        var rows: [String: [String: Any]] = [:]
        func walk(_ value: Any) {
            if let dict = value as? [String: Any] {
                if let device = dict["device"] as? Int, let id = dict["id"] as? Int { rows["\(device):\(id)"] = dict }
                for v in dict.values { walk(v) }
            } else if let array = value as? [Any] {
                for v in array { walk(v) }
            }
        }
        walk(json)
        return (rows, nil)
    }

    /// Every resource the guest holds (`held=device:resource,...`) lists the importer as holder
    /// when the imports went through the control socket (`resolve` takes a hold). With an fd from
    /// QEMU's shared-object table (`path=shared-object`) the importer only asks `show`, so no
    /// hold (docs/importer-protocol.md): each resource is listed without the importer.
    static func checkHolders(_ info: [String: String], controlSocket: String) -> CheckLine {
        let name = "import.vgpuctl_holders"
        let held = (info["held"] ?? "").split(separator: ",").map(String.init)
        guard !held.isEmpty else { return CheckLine(name: name, status: "fail", detail: "no VGPU-INFO import held=") }
        let viaSharedObject = info["path"] == "shared-object"
        let (rows, error) = listResources(controlSocket: controlSocket)
        if let error { return CheckLine(name: name, status: "fail", detail: error) }
        var problems: [String] = [], seen: [String] = []
        for key in held {
            guard let row = rows[key] else { problems.append("\(key) not listed"); continue }
            let holders = (row["holders"] as? [[String: Any]]) ?? []
            let names = holders.compactMap { $0["holder"] as? String }
            let importerHolds = names.contains(where: { $0.contains("vgpu-import-device") })
            if viaSharedObject {
                if importerHolds { problems.append("\(key) holders \(names), but path shared-object takes no hold") }
                else { seen.append("\(key) listed, no hold (path shared-object)") }
            } else if importerHolds { seen.append("\(key) held by \(names.joined(separator: ", "))") }
            else { problems.append("\(key) holders \(names)") }
        }
        return problems.isEmpty ? CheckLine(name: name, status: "pass", detail: seen.joined(separator: "; "))
                                : CheckLine(name: name, status: "fail", detail: problems.joined(separator: "; "))
    }

    /// Each card's UUID is listed on the device (and resource) the importer reported for it.
    static func checkDevices(_ info: [String: String], controlSocket: String) -> CheckLine {
        let name = "import-multigpu.vgpuctl_devices"
        let (rows, error) = listResources(controlSocket: controlSocket)
        if let error { return CheckLine(name: name, status: "fail", detail: error) }
        var problems: [String] = [], seen: [String] = []
        for card in 0..<2 {
            guard let device = info["card\(card)_device"], let resource = info["card\(card)_resource"], let uuid = info["card\(card)_uuid"] else {
                problems.append("card\(card): no VGPU-INFO"); continue
            }
            let row = rows["\(device):\(resource)"]
            if (row?["uuid"] as? String)?.lowercased() == uuid.lowercased() { seen.append("card\(card) \(uuid) on device \(device) resource \(resource)") }
            else { problems.append("card\(card): device \(device) resource \(resource) has uuid \(row?["uuid"] ?? "none"), importer said \(uuid)") }
        }
        return problems.isEmpty ? CheckLine(name: name, status: "pass", detail: seen.joined(separator: "; "))
                                : CheckLine(name: name, status: "fail", detail: problems.joined(separator: "; "))
    }

    /// Runs vgpuctl (next to the backend under test) with a 15 s bound.
    static func vgpuctl(_ arguments: [String]) -> (Int32, String) {
        let backend = (try? HarnessEnvironment(locatingFrom: #filePath).backend().executable) ?? ""
        let vgpuctl = URL(fileURLWithPath: backend).deletingLastPathComponent().appendingPathComponent("vgpuctl").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: vgpuctl)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch { return (-1, "\(vgpuctl): \(error)") }
        let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 15, execute: killer)
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        killer.cancel()
        return (process.terminationStatus, output)
    }

    /// qemu/compare's table line (VGPU_COMPARE_OUT).
    static func appendCompareLine(run: GuestProgramRun, kernel: String, scenario: String, verdict: String, outcome: ScenarioOutcome) {
        guard let path = ProcessInfo.processInfo.environment["VGPU_COMPARE_OUT"], !path.isEmpty,
              let handle = FileHandle(forWritingAtPath: path) ?? (FileManager.default.createFile(atPath: path, contents: nil) ? FileHandle(forWritingAtPath: path) : nil)
        else { return }
        handle.seekToEndOfFile()
        let unsupported = outcome.results.filter { $0.status == "unsupported" }.map(\.name)
        handle.write(Data("\(run.backend)\t\(kernel)\t\(scenario)\t\(verdict)\t\(unsupported.joined(separator: ","))\n".utf8))
        try? handle.close()
    }
}

extension GuestProgramRun {
    /// pass, fail or unsupported under `allowed`.
    func verdict(_ scenario: String, allowed: (CheckLine) -> Bool) -> String {
        let o = outcome(scenario)
        if o.results.isEmpty || o.allChecks.contains(where: { !allowed($0) }) { return "fail" }
        return o.results.contains { $0.status == "unsupported" } ? "unsupported" : "pass"
    }

    /// The guest's 1920x1080 import timing line, if it printed one.
    var timingLine: String? {
        let info = outcome("import").info
        guard let p50 = info["round_trip_p50_us"], let p99 = info["round_trip_p99_us"] else { return nil }
        return "UUID -> fd -> digest, 1920x1080, from the guest ioctl: p50 \(p50) us, p99 \(p99) us "
            + "(device share p50 \(info["device_p50_us"] ?? "?") us, p99 \(info["device_p99_us"] ?? "?") us; n=\(info["n"] ?? "?"))"
    }
}

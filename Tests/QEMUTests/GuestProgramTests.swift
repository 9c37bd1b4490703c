import Foundation
import QEMUHarness
import Testing

/// The DRM scenarios of `vgpu-guest-test` (Sources/vgpu-guest-test), run inside real guests on
/// both kernels against the backend under test (`VGPU_BACKEND`, default `vgpu-backend`).
///
/// One guest boot per kernel runs every scenario in a row (`vgpu.scenario=features,modeset,...`):
/// a boot costs 10-20 s under TCG, a scenario well under one. The boot is shared through
/// `GuestProgramRuns`; each test below reads its own scenario's part: every
/// `VGPU-RESULT name=<scenario>.*` must be `pass` (or an allowed `unsupported`), and every
/// screen the scenario showed must equal, pixel for pixel, the image computed here. On a
/// mismatch both images are saved as PNG in the guest's work folder (kept) with the first
/// differing pixels in the failure message.
@Suite("QEMU guests: vgpu-guest-test scenarios", .serialized)
struct GuestProgramTests {
    @Test("guest DRM scenario", .timeLimit(.minutes(4)), arguments: GuestProgramRuns.scenarios, ["6.1", "6.12"])
    func scenario(_ scenario: String, kernel: String) async throws {
        let run = try await GuestProgramRuns.shared.run(kernel: kernel, scenario: scenario)
        if let error = run.error {
            Issue.record("the guest run on \(kernel) against \(run.backend) failed: \(error)\(run.diagnosticsSuffix)")
            return
        }
        let outcome = run.outcome(scenario)
        #expect(!outcome.results.isEmpty, "no VGPU-RESULT lines for \(scenario) on \(kernel)\(run.diagnosticsSuffix)")
        for result in outcome.allChecks where !run.allowed(result) {
            Issue.record("\(kernel) \(run.backend): \(result.name) status=\(result.status) detail=\(result.detail)\(run.diagnosticsSuffix)")
        }
        for failure in outcome.screenFailures {
            Issue.record("\(kernel) \(run.backend): \(failure)\(run.diagnosticsSuffix)")
        }
        #expect(outcome.screensChecked == GuestProgramRuns.screens[scenario] ?? [],
                "screens checked for \(scenario): \(outcome.screensChecked)")

        // What each scenario must have reported, beyond "pass".
        switch scenario {
        case "features":
            #expect(outcome.value("features.version", "driver") == "virtio_gpu")
            #expect(outcome.value("features.param.3d", "value") == "0", "no virgl in this build")
            if run.isVgpuBackend {
                // vgpu-backend offers RESOURCE_UUID: the driver reports cross-device sharing.
                #expect(outcome.value("features.param.cross_device", "value") == "1")
            }
        case "export":
            #expect(Int(outcome.info["resource_id"] ?? "") ?? 0 > 0, "VGPU-INFO export resource_id: \(outcome.info)")
            if run.isVgpuBackend {
                #expect(outcome.status("export.uuid") == "pass")
                #expect(outcome.hostChecks.contains { $0.name == "export.vgpuctl_uuid" && $0.status == "pass" },
                        "host checks: \(outcome.hostChecks)")
            }
        case "errors":
            #expect(outcome.results.filter { $0.name.hasPrefix("errors.") }.count >= 20)
        case "flip":
            let rate = outcome.value("flip.rate", "flips_per_second") ?? "?"
            #expect(Int(rate) ?? 0 > 0, "flip.rate: \(outcome.results.filter { $0.name == "flip.rate" })")
            print("flip rate on \(kernel) against \(run.backend): \(rate) flips/s (\(outcome.info["flips"] ?? "?") flips of \(outcome.info["width"] ?? "?")x\(outcome.info["height"] ?? "?") in \(outcome.info["seconds"] ?? "?") s, slowest \(outcome.info["slowest_ms"] ?? "?") ms)")
        default:
            break
        }
        let verdict = run.verdict(scenario)
        print("guest \(scenario) on \(kernel) against \(run.backend): \(verdict), \(outcome.results.count) checks, screens \(outcome.screensChecked), boot run \(run.duration)")
        for note in outcome.notes { print("  note: \(note)") }
        for check in outcome.hostChecks { print("  host: \(check.name) \(check.status): \(check.detail)") }
        // qemu/compare collects these lines into its table.
        if let path = ProcessInfo.processInfo.environment["VGPU_COMPARE_OUT"], !path.isEmpty,
           let handle = FileHandle(forWritingAtPath: path) ?? (FileManager.default.createFile(atPath: path, contents: nil) ? FileHandle(forWritingAtPath: path) : nil) {
            handle.seekToEndOfFile()
            let unsupported = outcome.results.filter { $0.status == "unsupported" }.map(\.name)
            var note = unsupported.joined(separator: ",")
            if scenario == "flip", let rate = outcome.value("flip.rate", "flips_per_second") { note = "flips_per_second=\(rate)" }
            handle.write(Data("\(run.backend)\t\(kernel)\t\(scenario)\t\(verdict)\t\(note)\n".utf8))
            try? handle.close()
        }
    }
}

/// One `VGPU-RESULT` line with its raw status (`pass`, `fail`, `unsupported`).
struct CheckLine: Sendable {
    let name: String
    let status: String
    let detail: String
}

struct ScenarioOutcome: Sendable {
    var results: [CheckLine] = []
    /// key=value pairs of the scenario's `VGPU-INFO` lines.
    var info: [String: String] = [:]
    var screensChecked: [String] = []
    /// Checks made on the host while the guest waited (vgpuctl lookups).
    var hostChecks: [CheckLine] = []
    var allChecks: [CheckLine] { results + hostChecks }
    var screenFailures: [String] = []
    /// Screens that matched a known guest-kernel variant instead of the exact image, and why.
    var notes: [String] = []

    func status(_ name: String) -> String? { results.first { $0.name == name }?.status }
    /// `key=` of the named check's detail.
    func value(_ name: String, _ key: String) -> String? {
        guard let detail = results.first(where: { $0.name == name })?.detail else { return nil }
        return detail.split(separator: " ").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }
}

struct GuestProgramRun: Sendable {
    var kernel: String
    var backend: String
    var isVgpuBackend: Bool
    var outcomes: [String: ScenarioOutcome] = [:]
    var error: String?
    var diagnostics: String?
    var duration: Duration = .zero

    func outcome(_ scenario: String) -> ScenarioOutcome { outcomes[scenario] ?? ScenarioOutcome() }
    var diagnosticsSuffix: String { diagnostics.map { "\n\($0)" } ?? "" }

    /// pass, fail or unsupported (every check passed or was an allowed `unsupported`).
    func verdict(_ scenario: String) -> String {
        let o = outcome(scenario)
        if error != nil && o.results.isEmpty { return "fail" }
        if o.results.isEmpty || !o.screenFailures.isEmpty || o.allChecks.contains(where: { !allowed($0) })
            || o.screensChecked != (GuestProgramRuns.screens[scenario] ?? []) { return "fail" }
        return o.results.contains { $0.status == "unsupported" } ? "unsupported" : "pass"
    }

    /// `unsupported` is an honest answer where the device lacks the feature: RESOURCE_UUID on
    /// QEMU's C backend (export.uuid), a GETPARAM an older kernel does not know. vgpu-backend
    /// offers UUIDs, so there export.uuid must pass.
    func allowed(_ check: CheckLine) -> Bool {
        switch check.status {
        case "pass": return true
        case "unsupported": return !(isVgpuBackend && check.name == "export.uuid")
        default: return false
        }
    }
}

/// Boots each kernel once with every scenario and remembers the outcome for the tests.
actor GuestProgramRuns {
    static let shared = GuestProgramRuns()
    static let scenarios = ["features", "modeset", "partial", "errors", "export", "virtgpu", "cursor", "modechange", "multihead", "flip"]
    /// Scenarios that need their own boot: multihead wants two heads (`max_outputs=2`, and the second
    /// connector forced on from the kernel command line, since QEMU with `-display none` reports
    /// only the first head enabled).
    static let ownBoot: [String: (maxOutputs: Int, kernelArguments: [String])] = [
        "multihead": (2, ["video=Virtual-2:1024x768e"]),
    ]
    /// The heads each screen tag is checked on.
    static let heads: [String: [Int]] = ["multihead": [0, 1]]
    /// The `VGPU-READY` tags each scenario shows, in order.
    static let screens: [String: [String]] = [
        "modeset": ["modeset"], "partial": ["partial-full", "partial-rect"], "errors": ["errors-modeset"],
        "virtgpu": ["virtgpu"], "cursor": ["cursor"], "modechange": ["modechange", "modechange-back"],
        "multihead": ["multihead"], "flip": ["flip"],
    ]

    private var runs: [String: Task<GuestProgramRun, Never>] = [:]

    /// The boot that runs `scenario` on `kernel`: the shared one, or the scenario's own.
    func run(kernel: String, scenario: String) async throws -> GuestProgramRun {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let backend = try environment.backend()
        let own = Self.ownBoot[scenario]
        let scenarios = own == nil ? Self.scenarios.filter { Self.ownBoot[$0] == nil } : [scenario]
        let key = "\(kernel) \(backend.executable) \(scenarios.joined(separator: ","))"
        if let task = runs[key] { return await task.value }
        let program = try environment.guestTestProgram()
        var options = try await environment.guestOptions(
            kernel: kernel, scenario: scenarios.joined(separator: ","), backend: backend,
            binaries: [(program, "/bin/vgpu-guest-test")])
        // No commas in the label: QEMU's -name parses options.
        options.label = "\(kernel)-\(backend.label)-guest-\(own == nil ? "test" : scenario)"
        if let own {
            options.maxOutputs = own.maxOutputs
            options.kernelArguments += own.kernelArguments
        }
        // vgpu-backend gets a control socket of its own, where vgpuctl finds the exported resource.
        var controlSocket: String?
        if backend.label == "vgpu-backend" {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-ctl-\(UUID().uuidString.prefix(8)).sock").path
            options.backend.extraArguments += ["--control-socket", path]
            controlSocket = path
        }
        let task = Task { [options, controlSocket] in
            defer { if let controlSocket { try? FileManager.default.removeItem(atPath: controlSocket) } }
            return await Self.boot(options, controlSocket: controlSocket)
        }
        runs[key] = task
        return await task.value
    }

    /// A scratch box the session body fills in, read after `GuestSession.run` returns or throws.
    final class Box: @unchecked Sendable {
        var run: GuestProgramRun
        init(_ run: GuestProgramRun) { self.run = run }
    }

    struct ScreenMismatch: Error, CustomStringConvertible {
        let description: String
    }

    private static func boot(_ options: GuestOptions, controlSocket: String?) async -> GuestProgramRun {
        await session(options, drive: { guest, box in try await drive(guest, box, controlSocket: controlSocket) },
                      failed: { run in
                          run.outcomes.values.contains { o in !o.screenFailures.isEmpty || o.allChecks.contains { !run.allowed($0) } }
                      })
    }

    /// Boots `options`, lets `drive` follow the guest and fill the run in, and returns the run.
    /// When `failed` says a scenario failed, the session is ended with an error so the work
    /// folder (screens, logs) is kept and the diagnostics are attached; that failure itself is
    /// reported by each scenario's test, anything else fails them all (`run.error`).
    static func session(_ options: GuestOptions, drive: @escaping (GuestSession, Box) async throws -> Void,
                        failed: @escaping (GuestProgramRun) -> Bool) async -> GuestProgramRun {
        let label = options.backend.label
        let box = Box(GuestProgramRun(kernel: options.kernel.series, backend: label, isVgpuBackend: label == "vgpu-backend"))
        let start = ContinuousClock.now
        do {
            try await GuestSession.run(options) { guest in
                try await drive(guest, box)
                if failed(box.run) { throw ScreenMismatch(description: "a scenario failed (details in the tests' messages)") }
            }
        } catch let error as GuestSessionError {
            if !(error.underlying is ScreenMismatch) { box.run.error = "\(error.underlying)" }
            box.run.diagnostics = error.diagnostics
        } catch {
            box.run.error = "\(error)"
        }
        box.run.duration = ContinuousClock.now - start
        return box.run
    }

    /// Follows the guest: at each `VGPU-READY tag` compares the screen, then acknowledges;
    /// at `VGPU-DONE` collects the result lines.
    private static func drive(_ guest: GuestSession, _ box: Box, controlSocket: String?) async throws {
        while true {
            let line = try await guest.waitForLine("VGPU-READY or VGPU-DONE", timeout: .seconds(120), allowFailedScenario: true) {
                $0.text.contains("VGPU-READY ") || $0.text.contains("VGPU-DONE")
            }
            collect(guest.serialLines, into: &box.run)
            guard case let .ready(tag)? = line.event else { break }
            let scenario = String(tag.split(separator: "-").first ?? Substring(tag))
            if tag == "export" {  // no screen: look the exported resource up through vgpuctl
                if let check = lookUpExport(box.run, controlSocket: controlSocket) {
                    box.run.outcomes[scenario, default: ScenarioOutcome()].hostChecks.append(check)
                }
                try guest.acknowledge(tag)
                continue
            }
            box.run.outcomes[scenario, default: ScenarioOutcome()].screensChecked.append(tag)
            for head in heads[tag] ?? [0] {
                let (failure, note) = await checkScreen(guest, tag: tag, head: head, info: box.run.outcome(scenario).info)
                if let failure { box.run.outcomes[scenario, default: ScenarioOutcome()].screenFailures.append(failure) }
                if let note { box.run.outcomes[scenario, default: ScenarioOutcome()].notes.append("\(tag): \(note)") }
            }
            try guest.acknowledge(tag)
        }
        _ = try await guest.waitForPowerOff(timeout: .seconds(60))
        collect(guest.serialLines, into: &box.run)
    }

    /// `vgpuctl show --json <resource_id>` against vgpu-backend's control socket while the guest
    /// holds the exported buffer: the resource the guest exported must have a UUID. Nil for
    /// backends without a control socket (QEMU's C backend).
    static func lookUpExport(_ run: GuestProgramRun, controlSocket: String?) -> CheckLine? {
        guard let controlSocket else { return nil }
        let name = "export.vgpuctl_uuid"
        guard let id = run.outcome("export").info["resource_id"] else {
            return CheckLine(name: name, status: "fail", detail: "no VGPU-INFO export resource_id")
        }
        let backend = (try? HarnessEnvironment(locatingFrom: #filePath).backend().executable) ?? ""
        let vgpuctl = URL(fileURLWithPath: backend).deletingLastPathComponent().appendingPathComponent("vgpuctl").path
        guard FileManager.default.isExecutableFile(atPath: vgpuctl) else {
            return CheckLine(name: name, status: "fail", detail: "no vgpuctl next to the backend: \(vgpuctl)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: vgpuctl)
        process.arguments = ["show", "--socket", controlSocket, "--json", id]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        do { try process.run() } catch {
            return CheckLine(name: name, status: "fail", detail: "\(vgpuctl): \(error)")
        }
        let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 15, execute: killer)
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        killer.cancel()
        // `show --json` prints the protocol's result object (docs/control-protocol.md): the resource row,
        // with its "uuid", sits under "resource" (and that under "detail"); find it wherever it is.
        func findUUID(_ value: Any?) -> String? {
            if let dict = value as? [String: Any] {
                if let uuid = dict["uuid"] as? String, !uuid.isEmpty { return uuid }
                for key in ["detail", "resource"] { if let found = findUUID(dict[key]) { return found } }
            }
            return nil
        }
        let json = try? JSONSerialization.jsonObject(with: Data(output.utf8))
        guard process.terminationStatus == 0, let uuid = findUUID(json) else {
            return CheckLine(name: name, status: "fail",
                             detail: "vgpuctl show \(id) (status \(process.terminationStatus)): \(output.prefix(400))")
        }
        return CheckLine(name: name, status: "pass", detail: "resource \(id) has uuid \(uuid) (vgpuctl show)")
    }

    /// Rebuilds results and infos from every serial line so far.
    static func collect(_ lines: [SerialLine], into run: inout GuestProgramRun) {
        var fresh: [String: (results: [CheckLine], info: [String: String])] = [:]
        for line in lines {
            if let r = line.text.range(of: "VGPU-RESULT ") {
                let rest = line.text[r.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines)
                let head: Substring, detail: String
                if let d = rest.range(of: " detail=") { head = rest[..<d.lowerBound]; detail = String(rest[d.upperBound...]) } else { head = Substring(rest); detail = "" }
                func field(_ name: String) -> String {
                    head.split(separator: " ").first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) } ?? ""
                }
                let name = field("name")
                let scenario = String(name.split(separator: ".").first ?? "")
                fresh[scenario, default: ([], [:])].results.append(CheckLine(name: name, status: field("status"), detail: detail))
            } else if let r = line.text.range(of: "VGPU-INFO ") {
                let words = line.text[r.upperBound...].split(separator: " ")
                guard let scenario = words.first.map(String.init) else { continue }
                for word in words.dropFirst() {
                    let kv = word.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { fresh[scenario, default: ([], [:])].info[String(kv[0])] = kv[1].trimmingCharacters(in: .whitespacesAndNewlines) }
                }
            }
        }
        for (scenario, f) in fresh {
            run.outcomes[scenario, default: ScenarioOutcome()].results = f.results
            run.outcomes[scenario, default: ScenarioOutcome()].info = f.info
        }
    }

    /// What the kernel is known to do instead of the exact damage clip, per kernel series.
    static let wholePlaneUpload = "the guest kernel uploaded the whole plane, not the DIRTYFB clip (the canary shows): "
        + "virtio-gpu sets plane_state.ignore_damage_clips when the fb changes (6.8+), and the DRM core did not clear "
        + "it when duplicating plane states (upstream fix by T. Zimmermann, 'Fixes: 35ed38d58257', Cc stable 6.10+), "
        + "so after the SETCRTC every DIRTYFB is a full update; the backend showed exactly what it was sent"

    /// The screens `tag` may show, from the scenario's VGPU-INFO (mode size, rects): the
    /// expected one first, then any the guest kernel (not the backend) is known to produce,
    /// each with a note saying why.
    static func acceptableImages(tag: String, head: Int = 0, info: [String: String], kernel: String) -> [(image: RGBImage, note: String?)] {
        guard let exact = expectedImage(tag: tag, head: head, info: info) else { return [] }
        var images: [(RGBImage, String?)] = [(exact, nil)]
        if tag == "partial-rect", kernel != "6.1", let canary = GuestPattern.rect(info["canary"]) {
            // 6.1 predates ignore_damage_clips (6.8): there the clip must be exact.
            var whole = exact
            GuestPattern.fill(&whole, canary, color: 0xFF8000)
            images.append((whole, wholePlaneUpload))
        }
        return images
    }

    /// The screen `tag` must show, from the scenario's VGPU-INFO (mode size, rects).
    static func expectedImage(tag: String, head: Int = 0, info: [String: String]) -> RGBImage? {
        if tag == "multihead" {  // head0=WxH head1=WxH: the bars, reversed on the second head
            let size = (info["head\(head)"] ?? "").split(separator: "x").compactMap { Int($0) }
            guard size.count == 2, size[0] > 0, size[1] > 0 else { return nil }
            return GuestPattern.bars(width: size[0], height: size[1], reversed: head == 1)
        }
        guard let width = Int(info["width"] ?? ""), let height = Int(info["height"] ?? ""), width > 0, height > 0 else { return nil }
        switch tag {
        case "modeset", "partial-full", "errors-modeset", "cursor", "modechange", "modechange-back":
            return GuestPattern.bars(width: width, height: height)
        case "virtgpu":
            return GuestPattern.bars(width: width, height: height, reversed: true)
        case "flip":  // the last framebuffer flipped to: none lost at the end
            return GuestPattern.bars(width: width, height: height, reversed: info["final"] == "reversed")
        case "partial-rect":
            guard let rect = GuestPattern.rect(info["rect"]), let color = UInt32(info["color"] ?? "", radix: 16) else { return nil }
            var image = GuestPattern.bars(width: width, height: height)
            GuestPattern.fill(&image, rect, color: color)
            return image  // and not the canary (info["canary"]): it was written but never dirtied
        default:
            return nil
        }
    }

    /// Screendumps until the screen equals the expected image (the flush reaches QEMU's surface
    /// a little after the ioctl returns). Returns the failure message (nil when it matched) and,
    /// when it matched a known kernel variant instead of the exact image, that variant's note.
    private static func checkScreen(_ guest: GuestSession, tag: String, head: Int, info: [String: String]) async -> (failure: String?, note: String?) {
        let acceptable = acceptableImages(tag: tag, head: head, info: info, kernel: guest.options.kernel.series)
        let name = head == 0 ? tag : "\(tag)-head\(head)"
        guard let expected = acceptable.first?.image else {
            return ("\(name): no expected image (VGPU-INFO: \(info))", nil)
        }
        let deadline = ContinuousClock.now + .seconds(20)
        var last: RGBImage?
        do {
            while true {
                let image = try guest.screendump(head: head, name: name)
                if image == expected { return (nil, nil) }
                if let variant = acceptable.dropFirst().first(where: { $0.image == image }) { return (nil, variant.note) }
                last = image
                if ContinuousClock.now > deadline { break }
                try await Task.sleep(for: .milliseconds(250))
            }
        } catch {
            return ("\(name): screendump failed: \(error)", nil)
        }
        guard let actual = last else { return ("\(name): no screendump", nil) }
        let actualURL = try? guest.save(actual, as: "\(name)-actual")
        let expectedURL = try? guest.save(expected, as: "\(name)-expected")
        return ("\(name): screen differs from the expected image: \(GuestPattern.describeDifference(actual, expected))"
            + "; saved \(actualURL?.path ?? "?") and \(expectedURL?.path ?? "?")", nil)
    }
}

/// The images vgpu-guest-test draws, computed on the host (the same arithmetic as its `drawBars`).
enum GuestPattern {
    /// XRGB colours of the eight bars, left to right.
    static let barColors: [UInt32] = [0xFFFFFF, 0xFFFF00, 0x00FFFF, 0x00FF00, 0xFF00FF, 0xFF0000, 0x0000FF, 0x808080]

    static func rgb(_ c: UInt32) -> RGB { RGB(UInt8((c >> 16) & 0xFF), UInt8((c >> 8) & 0xFF), UInt8(c & 0xFF)) }

    static func bars(width: Int, height: Int, reversed: Bool = false) -> RGBImage {
        let colors = reversed ? Array(barColors.reversed()) : barColors
        var row = [UInt8](repeating: 0, count: width * 3)
        for i in 0..<8 {
            let c = rgb(colors[i])
            for x in (i * width / 8)..<((i + 1) * width / 8) {
                row[x * 3] = c.r; row[x * 3 + 1] = c.g; row[x * 3 + 2] = c.b
            }
        }
        var pixels = [UInt8]()
        pixels.reserveCapacity(width * height * 3)
        for _ in 0..<height { pixels += row }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    static func rect(_ text: String?) -> PixelRect? {
        let n = (text ?? "").split(separator: ",").compactMap { Int($0) }
        return n.count == 4 ? PixelRect(x: n[0], y: n[1], width: n[2], height: n[3]) : nil
    }

    static func fill(_ image: inout RGBImage, _ rect: PixelRect, color: UInt32) {
        let c = rgb(color)
        for y in rect.y..<(rect.y + rect.height) {
            for x in rect.x..<(rect.x + rect.width) {
                let i = (y * image.width + x) * 3
                image.pixels[i] = c.r; image.pixels[i + 1] = c.g; image.pixels[i + 2] = c.b
            }
        }
    }

    /// Size mismatch, or the number of differing pixels, their bounding box and the first few.
    static func describeDifference(_ actual: RGBImage, _ expected: RGBImage) -> String {
        guard actual.width == expected.width, actual.height == expected.height else {
            return "size \(actual.width)x\(actual.height), expected \(expected.width)x\(expected.height)"
        }
        var count = 0, first: [String] = []
        var minX = Int.max, minY = Int.max, maxX = -1, maxY = -1
        for y in 0..<actual.height {
            for x in 0..<actual.width {
                let i = (y * actual.width + x) * 3
                if actual.pixels[i] != expected.pixels[i] || actual.pixels[i + 1] != expected.pixels[i + 1]
                    || actual.pixels[i + 2] != expected.pixels[i + 2] {
                    count += 1
                    minX = min(minX, x); minY = min(minY, y); maxX = max(maxX, x); maxY = max(maxY, y)
                    if first.count < 5 { first.append("(\(x),\(y)) is \(actual[x, y]) not \(expected[x, y])") }
                }
            }
        }
        return "\(count) pixels differ within \(maxX - minX + 1)x\(maxY - minY + 1)+\(minX)+\(minY); first: \(first.joined(separator: ", "))"
    }
}

/// The host's side of the comparisons, without a guest.
@Suite("guest pattern pieces")
struct GuestPatternTests {
    @Test func barsMatchTheGuestArithmetic() {
        let image = GuestPattern.bars(width: 1030, height: 3)  // 1030/8 is not whole: bar i spans i*W/8 ..< (i+1)*W/8
        #expect(image[0, 0] == RGB(255, 255, 255))
        #expect(image[127, 2] == RGB(255, 255, 255) && image[128, 2] == RGB(255, 255, 0))
        #expect(image[1029, 1] == RGB(0x80, 0x80, 0x80))
        let reversed = GuestPattern.bars(width: 1030, height: 3, reversed: true)
        #expect(reversed[0, 0] == RGB(0x80, 0x80, 0x80) && reversed[1029, 0] == RGB(255, 255, 255))
    }

    @Test func partialExpectationsAndDifferences() throws {
        let info = ["width": "64", "height": "32", "rect": "8,4,10,6", "color": "204080", "canary": "40,20,4,4"]
        let full = try #require(GuestProgramRuns.expectedImage(tag: "partial-full", info: info))
        let rect = try #require(GuestProgramRuns.expectedImage(tag: "partial-rect", info: info))
        #expect(rect.differingPixels(from: full) == 60)
        #expect(rect[8, 4] == RGB(0x20, 0x40, 0x80) && rect[18, 4] == full[18, 4])
        #expect(GuestProgramRuns.acceptableImages(tag: "partial-rect", info: info, kernel: "6.1").count == 1)
        let variants = GuestProgramRuns.acceptableImages(tag: "partial-rect", info: info, kernel: "6.12")
        #expect(variants.count == 2 && variants[1].image.differingPixels(from: rect) == 16 && variants[1].note != nil)
        let text = GuestPattern.describeDifference(rect, full)
        #expect(text.hasPrefix("60 pixels differ within 10x6+8+4; first: (8,4) is #204080"), "\(text)")
        #expect(GuestPattern.describeDifference(GuestPattern.bars(width: 8, height: 8), full).hasPrefix("size 8x8"))
        #expect(GuestProgramRuns.expectedImage(tag: "multihead", head: 1, info: ["head1": "16x2"])?[0, 0] == RGB(0x80, 0x80, 0x80))
    }
}

import Foundation
import QEMUHarness
import Testing

/// Boots real Debian guest kernels under QEMU (TCG) against the backend named by
/// `VGPU_BACKEND` (default: `.build/debug/vgpu-backend`). Slow; run alone:
/// `swift test --filter QEMUTests` (scripts/test does). Against QEMU's C backend:
/// `VGPU_BACKEND=/usr/lib/qemu/vhost-user-gpu swift test --filter QEMUTests`.
@Suite("QEMU guests", .serialized)
struct FbconSmokeTests {
    /// guest/init's `fbcon-smoke`: the guest binds virtio-gpu, fbcon comes up on it, the
    /// screen is black after a clear, then shows the colour bars and the text block.
    @Test("fbcon smoke", .timeLimit(.minutes(3)), arguments: ["6.1", "6.12"])
    func fbconSmoke(kernel: String) async throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let options = try await environment.guestOptions(kernel: kernel, scenario: "fbcon-smoke")
        try await GuestSession.run(options) { guest in
            let modules = try await guest.waitForEvent("VGPU-MODULES", timeout: .seconds(120)) {
                if case .modules = $0 { return true } else { return false }
            }
            if case let .modules(_, failed, version)? = modules.event {
                #expect(failed == 0, "insmod failures: \(guest.serialLines.filter { $0.text.contains("insmod") })")
                #expect(version == options.kernel.version)
            }
            let bootTime = ContinuousClock.now - guest.launchedAt

            let consoleLine = try await guest.waitForEvent("VGPU-CONSOLE", timeout: .seconds(90)) {
                if case .console = $0 { return true } else { return false }
            }
            guard case let .console(geometry)? = consoleLine.event else {
                Issue.record("VGPU-CONSOLE line did not parse: \(consoleLine.text)")
                return
            }
            #expect(geometry.framebuffer == "virtio_gpudrmfb")
            #expect(geometry.cellWidth > 0 && geometry.cellHeight > 0, "\(geometry)")

            // The driver bound and negotiated EDID: "[drm] features: -virgl +edid -resource_blob -host_visible".
            let features = guest.dmesg.first { $0.contains("[drm] features:") && $0.contains("virgl") }
            #expect(features?.contains("+edid") == true, "dmesg: \(guest.dmesg.joined(separator: "\n"))")
            #expect(guest.dmesg.contains { $0.contains("Initialized virtio_gpu") })

            try await guest.waitForReady("fbcon-clear")
            let barsArea = ConsoleColorBars.area(in: geometry)
            let cleared = try await guest.waitForScreen("a black console", name: "clear") { image in
                image.width == geometry.width && image.litFraction(in: barsArea) == 0
            }
            #expect(cleared.litFraction() < 0.001)
            try guest.acknowledge("fbcon-clear")

            try await guest.waitForReady("fbcon-text")
            let textRows = geometry.cells(row: ConsoleColorBars.topRow + ConsoleColorBars.rows + 2, column: 1,
                                          rows: 8, columns: 80)
            let shown = try await guest.waitForScreen("colour bars and text", name: "text") { image in
                ConsoleColorBars.match(image, geometry: geometry).allSatisfy { $0.fraction > 0.99 }
                    && image.litFraction(in: textRows) > 0.1
            }
            // '#' glyphs light part of each cell; the bars light every pixel of theirs.
            #expect(shown.litFraction(in: textRows) > 0.2 && shown.litFraction(in: textRows) < 0.8)
            #expect(shown.differingPixels(from: cleared, in: barsArea) == barsArea.area)
            let title = geometry.cells(row: 2, column: 1, rows: 1, columns: 21)
            #expect(shown.litFraction(in: title) > 0.1)
            // Below the text block nothing was drawn.
            let below = PixelRect(x: 0, y: textRows.y + textRows.height + geometry.cellHeight,
                                  width: geometry.width, height: geometry.height - textRows.y - textRows.height - geometry.cellHeight)
            #expect(shown.litFraction(in: below) == 0)
            try guest.acknowledge("fbcon-text")

            let result = try await guest.waitForResult()
            #expect(result.passed, "\(result)")
            let status = try await guest.waitForPowerOff()
            #expect(status == 0)
            print("fbcon-smoke \(kernel) against \(options.backend.label): modules loaded after \(bootTime), total \(ContinuousClock.now - guest.launchedAt); \(features ?? "no features line")")
        }
    }

    /// A QEMU test fails, never skips, when its tools are missing.
    @Test("QEMU, kernels and the backend are where the tests expect them", .timeLimit(.minutes(1)))
    func prerequisites() throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        _ = try environment.qemu()
        _ = try environment.kernel("6.1")
        _ = try environment.kernel("6.12")
        _ = try environment.backend()
    }
}

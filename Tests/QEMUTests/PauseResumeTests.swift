import Foundation
import QEMUHarness
import Testing

/// QEMU stops a vhost-user device on a VM pause (`stop`), drops its display surfaces and hands the
/// backend a new display socket on `cont`, without resetting the device. The guest sees nothing and
/// keeps its scanouts (no new SET_SCANOUT), so the backend must announce them on the new channel
/// itself, or QEMU never shows another frame.
@Suite("QEMU pause and resume", .serialized)
struct PauseResumeTests {
    @Test("what the guest draws after stop and cont reaches the screen", .timeLimit(.minutes(3)))
    func screenSurvivesPause() async throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let options = try await environment.guestOptions(kernel: "6.1", scenario: "fbcon-smoke")
        try await GuestSession.run(options) { guest in
            let consoleLine = try await guest.waitForEvent("VGPU-CONSOLE", timeout: .seconds(90)) {
                if case .console = $0 { return true } else { return false }
            }
            guard case let .console(geometry)? = consoleLine.event else {
                Issue.record("VGPU-CONSOLE line did not parse: \(consoleLine.text)")
                return
            }
            // Pause while the guest waits for our ack on the cleared screen.
            try await guest.waitForReady("fbcon-clear")
            let cleared = try await guest.waitForScreen("a cleared console", name: "before-pause") { image in
                image.width == geometry.width && image.litFraction() < 0.001
            }
            let qmp = try #require(guest.qmp)
            _ = try qmp.execute("stop")
            try await Task.sleep(for: .seconds(1))
            _ = try qmp.execute("cont")
            // What the guest draws after the resume must reach the new display channel.
            try guest.acknowledge("fbcon-clear")
            try await guest.waitForReady("fbcon-text")
            let shown = try await guest.waitForScreen("colour bars drawn after cont", timeout: .seconds(15), name: "after-cont") { image in
                ConsoleColorBars.match(image, geometry: geometry).allSatisfy { $0.fraction > 0.99 }
            }
            #expect(shown.differingPixels(from: cleared) > 0)
            try guest.acknowledge("fbcon-text")
            let result = try await guest.waitForResult()
            #expect(result.passed, "\(result)")
            #expect(try await guest.waitForPowerOff() == 0)
        }
    }
}

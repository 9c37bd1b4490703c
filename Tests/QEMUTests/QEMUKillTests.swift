import Foundation
import QEMUHarness
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Issue 11 §4: QEMU killed with SIGKILL while the guest draws (fbcon: a full-frame transfer
/// and flush per update). The backend serves one frontend without --keep-running, so its
/// documented answer is a clean exit: status 0 within seconds, one log line saying the frontend
/// went away, no signal.
@Suite("QEMU killed", .serialized)
struct QEMUKillTests {
    @Test("SIGKILL to QEMU mid-drawing: the backend exits cleanly", .timeLimit(.minutes(3)))
    func backendExitsCleanlyWhenQEMUIsKilled() async throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let options = try await environment.guestOptions(kernel: "6.1", scenario: "fbcon-smoke")
        try await GuestSession.run(options) { guest in
            _ = try await guest.waitForEvent("VGPU-CONSOLE", timeout: .seconds(90)) {
                if case .console = $0 { return true } else { return false }
            }
            // The guest is drawing its colour bars: kill QEMU in the middle of it.
            try await guest.waitForReady("fbcon-clear")
            try guest.acknowledge("fbcon-clear")
            try await Self.killQEMUAndExpectACleanBackendExit(guest)
        }
    }

    /// The large-transfer case: the guest's `flip` scenario sends a full-frame (1280x800, 4 MB)
    /// TRANSFER_TO_HOST_2D, SET_SCANOUT and a fenced RESOURCE_FLUSH per flip, back to back
    /// (about a thousand a second against vgpu-backend), so the control queue is in the middle
    /// of an 4 MB copy out of guest RAM almost all the time when QEMU is killed. Same answer.
    @Test("SIGKILL to QEMU mid page-flip (4 MB transfers back to back): the backend exits cleanly", .timeLimit(.minutes(3)))
    func backendExitsCleanlyWhenQEMUIsKilledMidTransfer() async throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let program = try environment.guestTestProgram()
        var options = try await environment.guestOptions(kernel: "6.1", scenario: "flip",
                                                         binaries: [(program, "/bin/vgpu-guest-test")])
        options.label = "6.1-qemu-killed-mid-flip"
        options.kernelArguments += ["vgpu.flip_seconds=60"]
        try await GuestSession.run(options) { guest in
            // showBars' last step before the flip loop starts.
            _ = try await guest.waitForEvent("flip.setcrtc", timeout: .seconds(90)) {
                if case let .result(r) = $0 { return r.name == "flip.setcrtc" } else { return false }
            }
            try await Task.sleep(for: .milliseconds(1500))   // well into the flips
            try await Self.killQEMUAndExpectACleanBackendExit(guest) {
                // The flip loop (60 s) had not ended: no flip.rate result, so the kill hit it.
                #expect(!guest.serialLines.contains { if case let .result(r)? = $0.event { return r.name == "flip.rate" } else { return false } })
            }
        }
    }

    /// SIGKILL to QEMU (then `afterKill`, right away), and the backend's documented answer:
    /// status 0 within seconds, one log line saying the frontend went away, no signal.
    static func killQEMUAndExpectACleanBackendExit(_ guest: GuestSession, afterKill: () -> Void = {}) async throws {
        let qemu = try #require(guest.qemu), backend = try #require(guest.backend)
        kill(qemu.pid, SIGKILL)
        afterKill()
        _ = await qemu.waitForExit(timeout: .seconds(10))
        let status = await backend.waitForExit(timeout: .seconds(15))
        let log = backend.log()
        #expect(status == 0, "backend status \(status.map(String.init) ?? "still running"): \(backend.log(lastLines: 20))")
        #expect(log.contains("frontend disconnected") || log.contains("connection closed"),
                "no log line about the frontend: \(backend.log(lastLines: 20))")
        #expect(!log.contains("SIGBUS") && !log.contains("Fatal error"))
    }
}

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
            let qemu = try #require(guest.qemu), backend = try #require(guest.backend)
            kill(qemu.pid, SIGKILL)
            _ = await qemu.waitForExit(timeout: .seconds(10))
            let status = await backend.waitForExit(timeout: .seconds(15))
            let log = backend.log()
            #expect(status == 0, "backend status \(status.map(String.init) ?? "still running"): \(backend.log(lastLines: 20))")
            #expect(log.contains("frontend disconnected") || log.contains("connection closed"),
                    "no log line about the frontend: \(backend.log(lastLines: 20))")
            #expect(!log.contains("SIGBUS") && !log.contains("Fatal error"))
        }
    }
}

import Foundation
import QEMUHarness
import Testing

/// virgl 3D end to end: a guest with the host's real Mesa userspace (`guest/build-initramfs
/// --mesa`: kmscube, eglinfo, Mesa's virgl driver, LLVM and all) runs `guest/init`'s `virgl`
/// scenario against `$VGPU_BACKEND --virgl` (default `.build/debug/vgpu-backend --virgl`).
///
/// Passes only on the 3D path: the device offers VIRGL, Mesa's GBM platform picks the
/// `virtio_gpu` driver, kmscube's GL renderer names virgl ("virgl (<host renderer>)"), and two
/// screendumps taken while kmscube runs are not black and differ. Mesa falling back to
/// `kms_swrast` (llvmpipe inside the guest, which also draws a cube) is a failure. The guest's
/// frame rate is printed, never checked.
///
/// Fails fast: a backend that refuses `--virgl` exits before QEMU starts, a backend that dies
/// when VIRGL is negotiated (QEMU's C one without a render node) is seen at once, and a device
/// without VIRGL is reported by the guest right after boot.
@Suite("QEMU guests: virgl with a real Mesa userspace", .serialized)
struct VirglGuestTests {
    /// 6.12 unless `VGPU_VIRGL_KERNEL` says otherwise (6.1 works too): its virtio-gpu driver is
    /// the newer one, and the guest boots about as fast.
    static var kernel: String { ProcessInfo.processInfo.environment["VGPU_VIRGL_KERNEL"].flatMap { $0.isEmpty ? nil : $0 } ?? "6.12" }

    @Test("kmscube renders through virgl and reaches the screen", .timeLimit(.minutes(8)))
    func kmscube() async throws {
        try await Self.run(virgl: true)
    }

    /// The same guest and checks on a 2D device (the backend without `--virgl`), where Mesa
    /// must fall back to kms_swrast (llvmpipe in the guest): proves the guest side (initramfs,
    /// scenario, screendumps while kmscube runs) apart from the backend's 3D. Opt-in:
    /// `VGPU_MESA_SOFTWARE_TEST=1`.
    @Test("kmscube on Mesa's software fallback (2D device)", .timeLimit(.minutes(8)),
          .enabled(if: ProcessInfo.processInfo.environment["VGPU_MESA_SOFTWARE_TEST"] == "1"))
    func kmscubeSoftware() async throws {
        try await Self.run(virgl: false)
    }

    private static func run(virgl: Bool) async throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        var backend = try environment.backend()
        if virgl { backend.extraArguments += ["--virgl"] }
        // QEMU runs with `-display none`: no GL display to show a dmabuf scanout, and screendumps
        // read QEMU's pixel surface. vgpu-backend's `--dmabuf-scanout auto` would use dmabufs with
        // --virgl on a host that can make them; this test wants pixel updates everywhere.
        if virgl && backend.label == "vgpu-backend" { backend.extraArguments += ["--dmabuf-scanout", "off"] }
        var options = try await environment.guestOptions(kernel: Self.kernel, scenario: "virgl", backend: backend,
                                                         initramfsOptions: ["--mesa"])
        // The Mesa userspace unpacks to ~240 MB of rootfs (LLVM alone is 117 MB).
        options.memoryMiB = 1024
        options.label = "\(Self.kernel)-\(backend.label)-\(virgl ? "virgl" : "mesa-sw")"

        do {
            try await GuestSession.run(options) { guest in
                try await Self.drive(guest, virgl: virgl)
            }
        } catch let error as GuestSessionError {
            // Say first what the backend did, then the logs.
            if case let .processExited(name, status, waitingFor)? = error.underlying as? HarnessError,
               name.hasPrefix("backend") {
                Issue.record("""
                    \(backend.executable) \(backend.extraArguments.joined(separator: " ")) exited with status \(status) \
                    while the test waited for \(waitingFor): the backend refused its options or died setting up \
                    (with --virgl: 3D; see its log below)
                    \(error.diagnostics)
                    """)
            } else {
                throw error
            }
        }
    }

    private static func drive(_ guest: GuestSession, virgl: Bool) async throws {
        let modules = try await guest.waitForEvent("VGPU-MODULES", timeout: .seconds(180)) {
            if case .modules = $0 { return true } else { return false }
        }
        if case let .modules(_, failed, _)? = modules.event {
            #expect(failed == 0, "insmod failures: \(guest.serialLines.filter { $0.text.contains("insmod") }.map(\.text))")
        }
        let bootTime = ContinuousClock.now - guest.launchedAt

        // Each check's own line, in the order the guest reports them. With virgl the first that
        // fails ends the test; on a 2D device the first three must show the software fallback.
        let features = try await check(guest, "virgl.features", timeout: .seconds(120), passes: virgl,
                                       hint: "the device must offer VIRTIO_GPU_F_VIRGL when the backend runs with --virgl")
        let eglinfo = try await check(guest, "virgl.eglinfo", timeout: .seconds(120), passes: virgl,
                                      hint: "Mesa's GBM platform must pick virtio_gpu; kms_swrast is llvmpipe inside the guest")
        let renderer = try await check(guest, "virgl.renderer", timeout: .seconds(120), passes: virgl,
                                       hint: "kmscube's GL_RENDERER must name virgl")
        if virgl {
            #expect(renderer.detail.hasPrefix("virgl"), "renderer: \(renderer.detail)")
        } else {
            #expect(features.detail.contains("-virgl"), "\(features.detail)")
            #expect(eglinfo.detail.hasPrefix("gbm_driver=kms_swrast"), "\(eglinfo.detail)")
            #expect(renderer.detail.hasPrefix("llvmpipe"), "\(renderer.detail)")
        }

        // kmscube is drawing: two screens a moment apart, both lit (it clears to grey), not equal.
        // The guest gives kmscube 60 s (vgpu.kmscube_wait) to its first frame-rate line.
        try await guest.waitForReady("virgl-kmscube", timeout: .seconds(90))
        let first = try await guest.waitForScreen("a kmscube frame (not black)", timeout: .seconds(30), name: "kmscube-1") {
            $0.litFraction() > 0.5
        }
        try await Task.sleep(for: .seconds(1))
        let second = try await guest.waitForScreen("another kmscube frame", timeout: .seconds(30), name: "kmscube-2") {
            $0.litFraction() > 0.5 && $0.differingPixels(from: first) > 0
        }
        let changed = second.differingPixels(from: first)
        try guest.save(first, as: "kmscube-1")
        try guest.save(second, as: "kmscube-2")
        try guest.acknowledge("virgl-kmscube")

        let frames = try await check(guest, "virgl.kmscube", timeout: .seconds(60), passes: true,
                                     hint: "kmscube must still be running when the host is done")
        try await check(guest, "virgl", timeout: .seconds(30), passes: virgl, hint: "the scenario's summary")
        #expect(try await guest.waitForPowerOff() == 0)

        let fps = value("fps", in: frames.detail).flatMap(Double.init).map { String(format: "%.1f", $0) } ?? "?"
        print("""
            \(virgl ? "virgl" : "Mesa software fallback") on \(guest.options.kernel.series) against \
            \(([guest.options.backend.label] + guest.options.backend.extraArguments).joined(separator: " ")): renderer "\(renderer.detail)"; \
            kmscube \(fps) fps (\(frames.detail)); \(features.detail); eglinfo \(eglinfo.detail); \
            screens \(first.width)x\(first.height), \(changed) pixels changed between the two; \
            modules loaded after \(bootTime), total \(ContinuousClock.now - guest.launchedAt)
            """)
    }

    /// Waits for `VGPU-RESULT name=<name>` and requires it passed (or, `passes: false`, failed),
    /// saying why it matters.
    @discardableResult
    private static func check(_ guest: GuestSession, _ name: String, timeout: Duration, passes: Bool,
                              hint: String) async throws -> ScenarioResult {
        let line = try await guest.waitForEvent("VGPU-RESULT name=\(name)", timeout: timeout, allowFailedScenario: true) {
            if case let .result(r) = $0 { return r.name == name } else { return false }
        }
        guard case let .result(result)? = line.event else { fatalError("unreachable") }
        if passes {
            try #require(result.passed, "\(name) failed: \(result.detail) (\(hint))")
        } else {
            try #require(!result.passed, "\(name) passed on a device without virgl: \(result.detail)")
        }
        return result
    }

    /// `key=value` out of a detail text.
    static func value(_ key: String, in detail: String) -> String? {
        detail.split(separator: " ").first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
    }
}

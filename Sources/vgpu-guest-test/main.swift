// vgpu-guest-test: runs inside a test guest (packed into the initramfs by guest/build-initramfs,
// started by guest/init) and drives the guest kernel's virtio-gpu driver through its DRM ioctls.
//
//   vgpu-guest-test SCENARIO[,SCENARIO...]
//
// Scenarios: features, modeset, partial, errors, export, virtgpu, cursor, modechange,
// multihead, flip (page flips for vgpu.flip_seconds, FlipScenario.swift), and the cross-device import ones (ImportScenarios.swift): import, import-errors,
// import-multigpu (see `scenarios` below).
// One line per check on stdout (the serial console), as guest/init's protocol:
//   VGPU-RESULT name=<scenario>.<check> status=pass|fail|unsupported detail=...
//   VGPU-INFO <scenario> key=value...        what the host needs to compute expected images
//   VGPU-READY <tag>                         the screen shows <tag>: the host takes a screendump
// With vgpu.ack=1 on the kernel command line it waits after each VGPU-READY for the host's
// "VGPU-ACK <tag>" on /dev/ttyS0 (vgpu.ack_timeout seconds, default 120).
// Exit status: 0 when every check passed (unsupported counts as passed), 1 otherwise.
//
// Built static (`swift build -c release --static-swift-stdlib --product vgpu-guest-test`), no
// Foundation: the guest has glibc, libstdc++, libm and libgcc_s only.
import CGuestDRM
import Glibc


let scenarios: [(String, (Device, Report, Handshake) -> Void)] = [
    ("features", features), ("modeset", modeset), ("partial", partial), ("errors", errors),
    ("export", export), ("virtgpu", virtgpu), ("cursor", cursor), ("modechange", modechange),
    ("multihead", multihead), ("flip", flip),
    ("import", importScenario), ("import-errors", importErrorsScenario), ("import-multigpu", importMultiGPUScenario),
    ("import-demo", importDemoScenario),
]

// MARK: Main

let arguments = CommandLine.arguments
guard arguments.count == 2, !arguments[1].hasPrefix("-") else {
    emit("usage: vgpu-guest-test SCENARIO[,SCENARIO...]  (scenarios: \(scenarios.map(\.0).joined(separator: " ")), all)")
    exit(2)
}
let requested = arguments[1] == "all" ? scenarios.map(\.0) : arguments[1].split(separator: ",").map(String.init)
let report = Report()
let handshake = Handshake()
do {
    let device = try Device()
    for name in requested {
        guard let scenario = scenarios.first(where: { $0.0 == name }) else {
            report.fail("\(name).scenario", "unknown scenario")
            continue
        }
        emit("VGPU-LOG vgpu-guest-test scenario \(name)")
        let before = report.failures
        scenario.1(device, report, handshake)
        report.check(name, report.failures == before, "scenario \(name): \(report.failures - before) failed checks")
    }
} catch {
    report.fail("\(requested.first ?? "guest").device", "\(error)")
}
exit(report.failures == 0 ? 0 : 1)

import Foundation
import SystemSupport

/// What to boot: QEMU, a guest kernel and initramfs, a backend, a `guest/init` scenario.
public struct GuestOptions: Sendable {
    public var qemu: String
    public var kernel: GuestKernel
    public var initramfs: URL
    public var backend: BackendCommand
    /// `vgpu.scenario=` for guest/init.
    public var scenario: String
    /// `vgpu.ack=1`: after each `VGPU-READY tag` the guest waits for `acknowledge(tag)`.
    public var acknowledge = true
    /// `max_outputs=` of vhost-user-gpu-pci (QEMU's default is 1).
    public var maxOutputs: Int?
    public var memoryMiB = 512
    public var cpus = 1
    /// Appended to the kernel command line.
    public var kernelArguments: [String] = []
    /// Appended to QEMU's arguments.
    public var qemuArguments: [String] = []
    /// Goes into the work folder's name and the logs.
    public var label: String
    /// Keep the work folder (logs, screendumps) even when everything passed.
    public var keepWorkDir = false
    /// QOM id of the vhost-user-gpu-pci device (for `screendump` with `head`).
    public var displayDevice = "gpu0"
    /// False: no vhost-user-gpu-pci device and no backend process (guests that start their own
    /// programs, such as the `hostbuffers` scenario, which runs vgpu-backend inside the guest).
    public var gpuDevice = true
    /// More vhost-user-gpu-pci devices (QOM ids gpu1, gpu2, ...) served by the same backend
    /// process, which gets one more `--socket-path` each.
    public var extraGPUDevices = 0
    /// The importer device (vhost-user-i2c-pci, QOM id `importer0`) and the command of its
    /// backend, started before QEMU with `--socket-path SOCK` prepended to its arguments.
    public var importer: BackendCommand?

    public init(qemu: String, kernel: GuestKernel, initramfs: URL, backend: BackendCommand,
                scenario: String, label: String? = nil) {
        self.qemu = qemu
        self.kernel = kernel
        self.initramfs = initramfs
        self.backend = backend
        self.scenario = scenario
        self.label = label ?? "\(kernel.series)-\(backend.label)-\(scenario)"
    }

    /// The kernel command line.
    public var kernelCommandLine: String {
        (["console=ttyS0", "quiet", "panic=-1", "consoleblank=0", "vt.global_cursor_default=0",
          "vgpu.scenario=\(scenario)", "vgpu.ack=\(acknowledge ? 1 : 0)"] + kernelArguments).joined(separator: " ")
    }

    /// QEMU's arguments, given the paths of the three sockets. TCG always: /dev/kvm hangs on
    /// the machines this was written on. Guest RAM is a shared memfd, which vhost-user needs.
    public func qemuArguments(backendSocket: String, serialSocket: String, qmpSocket: String,
                              extraGPUSockets: [String] = [], importerSocket: String? = nil) -> [String] {
        var device = "vhost-user-gpu-pci,id=\(displayDevice),chardev=vgpu"
        if let maxOutputs { device += ",max_outputs=\(maxOutputs)" }
        var gpu = gpuDevice ? ["-chardev", "socket,id=vgpu,path=\(backendSocket)", "-device", device] : []
        for (i, socket) in extraGPUSockets.enumerated() where gpuDevice {
            gpu += ["-chardev", "socket,id=vgpu\(i + 1),path=\(socket)", "-device", "vhost-user-gpu-pci,id=gpu\(i + 1),chardev=vgpu\(i + 1)"]
        }
        if let importerSocket {
            gpu += ["-chardev", "socket,id=importer,path=\(importerSocket)", "-device", "vhost-user-i2c-pci,id=importer0,chardev=importer"]
        }
        return [
            "-name", "vgpu-\(label)",
            "-accel", "tcg", "-machine", "q35", "-cpu", "max", "-m", "\(memoryMiB)", "-smp", "\(cpus)",
            "-nodefaults", "-no-reboot", "-display", "none", "-vga", "none", "-monitor", "none",
            "-object", "memory-backend-memfd,id=mem,size=\(memoryMiB)M,share=on", "-numa", "node,memdev=mem",
            "-kernel", kernel.image.path, "-initrd", initramfs.path, "-append", kernelCommandLine,
        ] + gpu + [
            "-chardev", "socket,id=serial0,path=\(serialSocket)", "-serial", "chardev:serial0",
            "-qmp", "unix:\(qmpSocket),server=on,wait=off",
        ] + qemuArguments
    }
}

extension HarnessEnvironment {
    /// Options for `scenario` on kernel `series` against `backend` (default: `backend()`),
    /// building the initramfs if needed (`initramfsOptions`: more guest/build-initramfs flags).
    public func guestOptions(kernel series: String, scenario: String, backend: BackendCommand? = nil,
                             modules: [String] = [], adding: [(source: String, destination: String)] = [],
                             binaries: [(source: String, destination: String)] = [],
                             initramfsOptions: [String] = [])
        async throws -> GuestOptions
    {
        let qemu = try qemu()
        let kernel = try kernel(series)
        let backend = try backend ?? self.backend()
        guard FileManager.default.isExecutableFile(atPath: backend.executable) else {
            throw HarnessError.missing(what: "backend executable", path: backend.executable, hint: "")
        }
        let initramfs = try await initramfs(for: kernel, modules: modules, adding: adding, binaries: binaries,
                                            options: initramfsOptions)
        var options = GuestOptions(qemu: qemu, kernel: kernel, initramfs: initramfs, backend: backend, scenario: scenario)
        options.keepWorkDir = variables["VGPU_KEEP_WORKDIR"] == "1"
        return options
    }
}

/// An error from inside a guest session, with the logs that explain it.
public struct GuestSessionError: Error, CustomStringConvertible {
    public let underlying: any Error
    public let diagnostics: String
    public var description: String { "\(underlying)\n\(diagnostics)" }
}

/// A running guest: the backend process, QEMU, the serial console and QMP. Everything is
/// killed by `shutdown()`, which `run` calls on every path and `deinit` calls as a last resort.
public final class GuestSession: @unchecked Sendable {
    public let options: GuestOptions
    public let workDir: URL
    public let backendSocket: String
    public let serialSocket: String
    public let qmpSocket: String
    /// The sockets of `options.extraGPUDevices` (gpu1.sock, ...).
    public let extraGPUSockets: [String]
    /// The importer device's vhost-user socket (with `options.importer`).
    public let importerSocket: String

    public private(set) var backend: ChildProcess?
    public private(set) var importer: ChildProcess?
    /// Backends of the extra GPU devices when the backend takes one socket per process.
    public private(set) var extraBackends: [ChildProcess] = []
    public private(set) var qemu: ChildProcess?
    public private(set) var serial: SerialConsole?
    public private(set) var qmp: QMPClient?
    /// When QEMU was started (boot times are measured from here).
    public private(set) var launchedAt = ContinuousClock.now
    private let cursorIndex = Mutex(0)
    private let screendumpCount = Mutex(0)
    private let isShutDown = Mutex(false)

    /// Boots a guest and returns once QMP is up. On failure everything started is stopped and
    /// the error carries the logs.
    public static func launch(_ options: GuestOptions) async throws -> GuestSession {
        let session = try GuestSession(options: options)
        do {
            try await session.start()
            return session
        } catch {
            session.shutdown()
            let diagnostics = session.diagnostics()
            session.finish(success: false)
            throw GuestSessionError(underlying: error, diagnostics: diagnostics)
        }
    }

    /// Boots a guest, runs `body`, and shuts everything down whatever happens. A failure
    /// comes back as a `GuestSessionError` with the backend, QEMU and serial logs; the work
    /// folder is kept then (its path is in the message).
    public static func run<T>(_ options: GuestOptions, _ body: (GuestSession) async throws -> T) async throws -> T {
        let session = try await launch(options)
        do {
            let value = try await body(session)
            session.shutdown()
            session.finish(success: true)
            return value
        } catch {
            session.shutdown()
            let diagnostics = session.diagnostics()
            session.finish(success: false)
            throw GuestSessionError(underlying: error, diagnostics: diagnostics)
        }
    }

    private init(options: GuestOptions) throws {
        self.options = options
        let safeLabel = String(options.label.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" ? $0 : "_" }.prefix(40))
        var template = Array("/tmp/vgpu-\(safeLabel)-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw HarnessError.socket(operation: "mkdtemp", path: "/tmp", errno: errno)
        }
        workDir = URL(fileURLWithPath: String(cString: dir))
        backendSocket = workDir.appendingPathComponent("gpu.sock").path
        serialSocket = workDir.appendingPathComponent("serial.sock").path
        qmpSocket = workDir.appendingPathComponent("qmp.sock").path
        let folder = workDir
        extraGPUSockets = (0..<max(0, options.extraGPUDevices)).map { folder.appendingPathComponent("gpu\($0 + 1).sock").path }
        importerSocket = workDir.appendingPathComponent("importer.sock").path
    }

    deinit { shutdown() }

    private func start() async throws {
        for (what, path) in [("QEMU", options.qemu), ("guest kernel", options.kernel.image.path),
                             ("initramfs", options.initramfs.path)] + (options.gpuDevice ? [("backend", options.backend.executable)] : [])
        where !FileManager.default.fileExists(atPath: path) {
            throw HarnessError.missing(what: what, path: path, hint: "run scripts/setup")
        }
        if options.gpuDevice { try await startBackend() }
        if options.importer != nil { try await startImporter() }
        serial = try SerialConsole(socketPath: serialSocket, logFile: workDir.appendingPathComponent("serial.log"))
        try await startQEMU()
    }

    private func startBackend() async throws {
        let command = options.backend
        let ownSockets = command.servesSeveralSockets ? [backendSocket] + extraGPUSockets : [backendSocket]
        let backend = try ChildProcess(
            name: "backend (\(command.label))", executable: command.executable,
            arguments: ownSockets.flatMap { ["--socket-path", $0] } + command.extraArguments,
            logFile: workDir.appendingPathComponent("backend.log"))
        self.backend = backend
        for socket in ownSockets { try await Self.waitListening(backend, socket) }
        guard !command.servesSeveralSockets else { return }
        for (i, socket) in extraGPUSockets.enumerated() {
            let extra = try ChildProcess(
                name: "backend \(i + 1) (\(command.label))", executable: command.executable,
                arguments: ["--socket-path", socket] + command.extraArguments,
                logFile: workDir.appendingPathComponent("backend\(i + 1).log"))
            extraBackends.append(extra)
            try await Self.waitListening(extra, socket)
        }
    }

    private func startImporter() async throws {
        guard let command = options.importer else { return }
        let importer = try ChildProcess(
            name: "importer (\(command.label))", executable: command.executable,
            arguments: ["--socket-path", importerSocket] + command.extraArguments,
            logFile: workDir.appendingPathComponent("importer.log"))
        self.importer = importer
        try await Self.waitListening(importer, importerSocket)
    }

    private static func waitListening(_ process: ChildProcess, _ socket: String) async throws {
        let socketDeadline = Deadline(.seconds(20))
        while !UnixSocket.isListening(path: socket) {
            if let status = process.exitStatus {
                throw HarnessError.processExited(name: process.name, status: status, waitingFor: "its socket \(socket)")
            }
            if socketDeadline.expired { throw HarnessError.timeout(waitingFor: "\(process.name) socket \(socket)", after: socketDeadline.timeout) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    private func startQEMU() async throws {
        launchedAt = ContinuousClock.now
        let qemu = try ChildProcess(
            name: "QEMU", executable: options.qemu,
            arguments: options.qemuArguments(backendSocket: backendSocket, serialSocket: serialSocket, qmpSocket: qmpSocket,
                                             extraGPUSockets: extraGPUSockets,
                                             importerSocket: options.importer == nil ? nil : importerSocket),
            logFile: workDir.appendingPathComponent("qemu.log"))
        self.qemu = qemu
        let qmpDeadline = Deadline(.seconds(30))
        while !FileManager.default.fileExists(atPath: qmpSocket) {
            if let status = qemu.exitStatus { throw HarnessError.processExited(name: "QEMU", status: status, waitingFor: "its QMP socket") }
            if qmpDeadline.expired { throw HarnessError.timeout(waitingFor: "QEMU's QMP socket", after: qmpDeadline.timeout) }
            try await Task.sleep(for: .milliseconds(20))
        }
        do {
            qmp = try QMPClient(path: qmpSocket, timeout: .seconds(30))
        } catch {
            // Usually QEMU gave up (a backend that does not answer, a bad option): say that.
            if let status = await qemu.waitForExit(timeout: .seconds(1)) {
                throw HarnessError.processExited(name: "QEMU", status: status, waitingFor: "QMP (\(error))")
            }
            if case .timeout = error as? HarnessError {
                throw HarnessError.timeout(
                    waitingFor: "QEMU's QMP greeting; QEMU sends it once every device is up, so it is probably "
                        + "stuck in vhost-user-gpu-pci's set-up waiting for a backend reply (see the backend log)",
                    after: .seconds(30))
            }
            throw error
        }
    }

    // MARK: Serial console

    /// Lines the guest printed so far.
    public var serialLines: [SerialLine] { serial?.lines ?? [] }

    /// The kernel log lines `guest/init` forwarded (`VGPU-DMESG`).
    public var dmesg: [String] {
        serialLines.compactMap { if case let .dmesg(text)? = $0.event { return text } else { return nil } }
    }

    /// Waits for the next line (after the last one a wait returned) that satisfies `predicate`.
    /// Throws early if the guest reports a failed scenario (unless `allowFailedScenario`), or
    /// QEMU or the backend exits.
    @discardableResult
    public func waitForLine(_ what: String, timeout: Duration, allowFailedScenario: Bool = false,
                            where predicate: @escaping (SerialLine) -> Bool) async throws -> SerialLine {
        guard let serial else { throw HarnessError.processExited(name: "QEMU", status: -1, waitingFor: what) }
        let deadline = Deadline(timeout)
        var exitSeen: ContinuousClock.Instant?
        while true {
            let from = cursorIndex.withLock { $0 }
            if let line = serial.firstLine(from: from, where: predicate) {
                cursorIndex.withLock { $0 = max($0, line.index + 1) }
                return line
            }
            if !allowFailedScenario,
               let failed = serial.firstLine(from: from, where: { if case let .result(r)? = $0.event { return !r.passed } else { return false } }),
               case let .result(r)? = failed.event {
                throw HarnessError.scenarioFailed(name: r.name, detail: r.detail)
            }
            // A process that ended: give the serial reader a moment to drain, then give up.
            if let qemu, let status = qemu.exitStatus {
                if let seen = exitSeen, ContinuousClock.now - seen > .milliseconds(500) || serial.isClosed {
                    throw HarnessError.processExited(name: "QEMU", status: status, waitingFor: what)
                }
                exitSeen = exitSeen ?? ContinuousClock.now
            } else if let backend, let status = backend.exitStatus {
                throw HarnessError.processExited(name: backend.name, status: status, waitingFor: what)
            } else if let importer, let status = importer.exitStatus {
                throw HarnessError.processExited(name: importer.name, status: status, waitingFor: what)
            }
            if deadline.expired { throw HarnessError.timeout(waitingFor: what, after: timeout) }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Waits for a guest event.
    @discardableResult
    public func waitForEvent(_ what: String, timeout: Duration, allowFailedScenario: Bool = false,
                             where predicate: @escaping (GuestEvent) -> Bool) async throws -> SerialLine {
        try await waitForLine(what, timeout: timeout, allowFailedScenario: allowFailedScenario) { line in
            line.event.map(predicate) ?? false
        }
    }

    /// Waits for `VGPU-READY tag`.
    public func waitForReady(_ tag: String, timeout: Duration = .seconds(120)) async throws {
        try await waitForEvent("VGPU-READY \(tag)", timeout: timeout) { $0 == .ready(tag: tag) }
    }

    /// Lets a guest booted with `acknowledge` go on past `VGPU-READY tag`.
    public func acknowledge(_ tag: String) throws {
        guard let serial else { return }
        try serial.send("VGPU-ACK \(tag)")
    }

    /// Waits for the scenario's `VGPU-RESULT` and returns it (passed or not).
    public func waitForResult(timeout: Duration = .seconds(120)) async throws -> ScenarioResult {
        let line = try await waitForEvent("VGPU-RESULT", timeout: timeout, allowFailedScenario: true) {
            if case .result = $0 { return true } else { return false }
        }
        guard case let .result(result)? = line.event else { fatalError("unreachable") }
        return result
    }

    /// Waits for QEMU to end by itself (the guest powered off); returns its exit status.
    public func waitForPowerOff(timeout: Duration = .seconds(60)) async throws -> Int32 {
        guard let qemu else { return -1 }
        guard let status = await qemu.waitForExit(timeout: timeout) else {
            throw HarnessError.timeout(waitingFor: "the guest to power off", after: timeout)
        }
        return status
    }

    // MARK: Screen

    /// A QMP screendump of `head`, parsed; the PPM stays in the work folder as `name`.ppm.
    public func screendump(head: Int = 0, name: String? = nil) throws -> RGBImage {
        guard let qmp else { throw HarnessError.qmp(command: "screendump", message: "not connected") }
        let n = screendumpCount.withLock { $0 += 1; return $0 }
        let file = workDir.appendingPathComponent(String(format: "%03d-", n) + (name ?? "head\(head)") + ".ppm")
        try qmp.screendump(to: file, format: "ppm", device: options.displayDevice, head: head)
        return try RGBImage(ppmFile: file)
    }

    /// Takes screendumps until `condition` holds for one (the guest's drawing reaches QEMU's
    /// surface a little after the guest wrote it); returns that image. On timeout, the last
    /// image is saved as `name`-timeout.png and the error says so.
    public func waitForScreen(_ what: String, head: Int = 0, timeout: Duration = .seconds(30),
                              name: String? = nil, until condition: (RGBImage) -> Bool) async throws -> RGBImage {
        let deadline = Deadline(timeout)
        var last: RGBImage?
        while true {
            let image = try screendump(head: head, name: name)
            if condition(image) { return image }
            last = image
            if deadline.expired {
                let png = workDir.appendingPathComponent("\(name ?? "screen")-timeout.png")
                try? last?.writePNG(to: png)
                throw HarnessError.timeout(waitingFor: "screen: \(what) (last screendump: \(png.path))", after: timeout)
            }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    /// Writes `image` as `name`.png into the work folder; returns its URL.
    @discardableResult
    public func save(_ image: RGBImage, as name: String) throws -> URL {
        let url = workDir.appendingPathComponent(name.hasSuffix(".png") ? name : "\(name).png")
        try image.writePNG(to: url)
        return url
    }

    // MARK: Teardown

    /// Quits QEMU, stops the backend and the serial reader. Idempotent, never throws.
    public func shutdown() {
        let already = isShutDown.withLock { s -> Bool in defer { s = true }; return s }
        if already { return }
        if let qemu, qemu.isRunning {
            if let qmp {
                qmp.quit(timeout: .seconds(3))
                qemu.kill(grace: .seconds(5))
            } else {
                qemu.kill(grace: .seconds(1))  // no QMP: QEMU is blocked and ignores SIGTERM anyway
            }
        }
        qmp?.close()
        importer?.kill(grace: .seconds(3))
        for extra in extraBackends { extra.kill(grace: .seconds(3)) }
        backend?.kill(grace: .seconds(3))
        serial?.stop()
    }

    /// Removes the work folder after a success, unless asked to keep it.
    private func finish(success: Bool) {
        if success && !options.keepWorkDir {
            try? FileManager.default.removeItem(at: workDir)
        }
    }

    /// The commands and the tails of every log, for failure messages.
    public func diagnostics(lines: Int = 80) -> String {
        var out = "---- guest session \(options.label), work folder (kept): \(workDir.path)\n"
        if let backend {
            out += "---- backend: \(backend.commandLine) [\(backend.exitStatus.map { "exited \($0)" } ?? "running")]\n"
            out += backend.log(lastLines: lines) + "\n"
        }
        if let importer {
            out += "---- importer: \(importer.commandLine) [\(importer.exitStatus.map { "exited \($0)" } ?? "running")]\n"
            out += importer.log(lastLines: lines) + "\n"
        }
        if let qemu {
            out += "---- QEMU: \(qemu.commandLine) [\(qemu.exitStatus.map { "exited \($0)" } ?? "running")]\n"
            out += qemu.log(lastLines: lines) + "\n"
        }
        if let serial {
            let text = serial.text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines * 2).joined(separator: "\n")
            out += "---- serial console (\(serial.logFile.path)):\n\(text)\n"
        }
        out += "---- end of \(options.label)"
        return out
    }
}

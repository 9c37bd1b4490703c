import Foundation

/// A guest kernel unpacked by `scripts/setup` under `.cache/kernels/<series>/`.
public struct GuestKernel: Sendable, Equatable {
    /// "6.1" or "6.12": the folder name, and what `guest/build-initramfs --kernel` takes.
    public let series: String
    /// e.g. "6.1.0-56-amd64"
    public let version: String
    public let image: URL
}

/// How to start a vhost-user-gpu backend: `executable --socket-path SOCK extraArguments...`.
public struct BackendCommand: Sendable, Equatable {
    public var executable: String
    public var extraArguments: [String]
    /// A short name for logs and tables ("vgpu-backend", "qemu-c").
    public var label: String
    /// Whether one process serves several `--socket-path`s (vgpu-backend); otherwise each extra
    /// GPU device gets a process of its own (QEMU's C backend takes one socket).
    public var servesSeveralSockets: Bool

    public init(executable: String, extraArguments: [String] = [], label: String? = nil, servesSeveralSockets: Bool = true) {
        self.executable = executable
        self.extraArguments = extraArguments
        self.label = label ?? URL(fileURLWithPath: executable).lastPathComponent
        self.servesSeveralSockets = servesSeveralSockets
    }

    /// QEMU's C reference backend (package qemu-system-gui).
    public static let qemuReference = BackendCommand(executable: "/usr/lib/qemu/vhost-user-gpu", label: "qemu-c",
                                                     servesSeveralSockets: false)
}

/// Where things are: the package root, the built backend, the guest kernels, QEMU.
/// Environment overrides: `VGPU_BACKEND` (backend executable), `VGPU_QEMU` (QEMU binary),
/// `VGPU_INITRAMFS` (a prebuilt initramfs instead of running guest/build-initramfs),
/// `VGPU_GUEST_TEST` (the static vgpu-guest-test binary packed into the initramfs),
/// `VGPU_GUEST_BACKEND`, `VGPU_GUEST_VGPUCTL`, `VGPU_HOSTBUFFER_CHECK` (the static programs of the
/// host buffer VM test),
/// `VGPU_IMPORT_DEVICE` (the importer device backend),
/// `VGPU_KEEP_WORKDIR=1` (keep each guest's folder of logs and screendumps even on success).
public struct HarnessEnvironment: Sendable {
    public let packageRoot: URL
    public let variables: [String: String]

    public init(packageRoot: URL, variables: [String: String] = ProcessInfo.processInfo.environment) {
        self.packageRoot = packageRoot
        self.variables = variables
    }

    /// Finds the package root (the folder holding Package.swift) above `filePath`; pass
    /// `#filePath` from a test file.
    public init(locatingFrom filePath: String = #filePath) throws {
        var dir = URL(fileURLWithPath: filePath).deletingLastPathComponent()
        while dir.path != "/" {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
                self.init(packageRoot: dir)
                return
            }
            dir = dir.deletingLastPathComponent()
        }
        throw HarnessError.missing(what: "Package.swift above", path: filePath, hint: "")
    }

    /// The backend to test: `$VGPU_BACKEND`, else `.build/debug/vgpu-backend`.
    public func backend() throws -> BackendCommand {
        let path = variables["VGPU_BACKEND"].flatMap { $0.isEmpty ? nil : $0 }
            ?? packageRoot.appendingPathComponent(".build/debug/vgpu-backend").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HarnessError.missing(what: "backend executable", path: path,
                                       hint: "run swift build, or set VGPU_BACKEND (e.g. /usr/lib/qemu/vhost-user-gpu)")
        }
        return path == BackendCommand.qemuReference.executable ? .qemuReference : BackendCommand(executable: path)
    }

    /// The static guest test program (Sources/vgpu-guest-test): `$VGPU_GUEST_TEST`, else
    /// `.build-guest/release/vgpu-guest-test`, which scripts/test builds with
    /// `swift build -c release --static-swift-stdlib --product vgpu-guest-test --scratch-path .build-guest`.
    public func guestTestProgram() throws -> String {
        try guestProgram("vgpu-guest-test", variable: "VGPU_GUEST_TEST")
    }

    /// A static program built for the guests: `$variable`, else `.build-guest/release/<product>`
    /// (scripts/test builds each with `swift build -c release --static-swift-stdlib --product
    /// <product> --scratch-path .build-guest`). The host buffer VM test packs three:
    /// `VGPU_GUEST_BACKEND` (vgpu-backend), `VGPU_GUEST_VGPUCTL` (vgpuctl) and
    /// `VGPU_HOSTBUFFER_CHECK` (vgpu-hostbuffer-check).
    public func guestProgram(_ product: String, variable: String) throws -> String {
        let path = variables[variable].flatMap { $0.isEmpty ? nil : $0 }
            ?? packageRoot.appendingPathComponent(".build-guest/release/\(product)").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HarnessError.missing(what: "static guest program \(product) (\(variable))", path: path,
                                       hint: "swift build -c release --static-swift-stdlib --product \(product) --scratch-path .build-guest (scripts/test does)")
        }
        return path
    }

    /// The importer device backend (Sources/vgpu-import-device) QEMU starts next to the GPU
    /// backend: `$VGPU_IMPORT_DEVICE`, else `vgpu-import-device` next to `.build/debug/vgpu-backend`.
    public func importDevice() throws -> String {
        let path = variables["VGPU_IMPORT_DEVICE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? packageRoot.appendingPathComponent(".build/debug/vgpu-import-device").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw HarnessError.missing(what: "importer device backend", path: path, hint: "run swift build, or set VGPU_IMPORT_DEVICE")
        }
        return path
    }

    /// The guest module `vgpu_import.ko` for `kernel`, built (cached) by `guest/build-module`.
    public func importModule(for kernel: GuestKernel) async throws -> String {
        let script = packageRoot.appendingPathComponent("guest/build-module").path
        let output = try await Self.run(script, ["--kernel", kernel.series], timeout: .seconds(300))
        guard let last = output.split(separator: "\n").last, last.hasPrefix("/"), last.hasSuffix(".ko") else {
            throw HarnessError.commandFailed(command: script, status: 0, output: "no module path printed:\n\(output)")
        }
        return String(last)
    }

    /// The QEMU system emulator: `$VGPU_QEMU`, else `qemu-system-x86_64` on PATH. Must be QEMU ≥ 10.
    public func qemu() throws -> String {
        if let path = variables["VGPU_QEMU"], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw HarnessError.missing(what: "QEMU (VGPU_QEMU)", path: path, hint: "")
            }
            return path
        }
        let searchPath = variables["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in searchPath.split(separator: ":") + ["/usr/bin"] {
            let candidate = "\(dir)/qemu-system-x86_64"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw HarnessError.missing(what: "qemu-system-x86_64", path: searchPath, hint: "run scripts/setup")
    }

    /// The unpacked guest kernel of `series` ("6.1", "6.12").
    public func kernel(_ series: String) throws -> GuestKernel {
        let dir = packageRoot.appendingPathComponent(".cache/kernels/\(series)")
        let versionFile = dir.appendingPathComponent("version")
        guard let version = try? String(contentsOf: versionFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines), !version.isEmpty else {
            throw HarnessError.missing(what: "guest kernel \(series)", path: dir.path, hint: "run scripts/setup")
        }
        let image = dir.appendingPathComponent("vmlinuz").resolvingSymlinksInPath()
        guard FileManager.default.fileExists(atPath: image.path) else {
            throw HarnessError.missing(what: "guest kernel image \(series)", path: image.path, hint: "run scripts/setup")
        }
        return GuestKernel(series: series, version: version, image: image)
    }

    /// The initramfs for `kernel`: `$VGPU_INITRAMFS` if set, else built by
    /// `guest/build-initramfs --kernel SERIES [--module M]... [--add SRC:DST]... [--binary SRC:DST]... [OPTIONS]`
    /// (`binaries` are copied with the shared libraries they need; `options` are more of the
    /// script's flags, e.g. `--mesa`).
    public func initramfs(for kernel: GuestKernel, modules: [String] = [], adding: [(source: String, destination: String)] = [],
                          binaries: [(source: String, destination: String)] = [], options: [String] = [])
        async throws -> URL
    {
        if let path = variables["VGPU_INITRAMFS"], !path.isEmpty {
            guard FileManager.default.fileExists(atPath: path) else {
                throw HarnessError.missing(what: "initramfs (VGPU_INITRAMFS)", path: path, hint: "")
            }
            return URL(fileURLWithPath: path)
        }
        let script = packageRoot.appendingPathComponent("guest/build-initramfs").path
        var arguments = ["--kernel", kernel.series]
        for m in modules { arguments += ["--module", m] }
        for a in adding { arguments += ["--add", "\(a.source):\(a.destination)"] }
        for b in binaries { arguments += ["--binary", "\(b.source):\(b.destination)"] }
        arguments += options
        let output = try await Self.run(script, arguments, timeout: .seconds(120))
        guard let last = output.split(separator: "\n").last, last.hasPrefix("/") else {
            throw HarnessError.commandFailed(command: script, status: 0, output: "no image path printed:\n\(output)")
        }
        return URL(fileURLWithPath: String(last))
    }

    /// Runs a command to completion and returns its stdout; throws with its output on failure.
    static func run(_ executable: String, _ arguments: [String], timeout: Duration) async throws -> String {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw HarnessError.missing(what: "program", path: executable, hint: "")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-run-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let stdoutFile = dir.appendingPathComponent("stdout"), stderrFile = dir.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: stdoutFile.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrFile.path, contents: nil)
        let out = try FileHandle(forWritingTo: stdoutFile), err = try FileHandle(forWritingTo: stderrFile)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try process.run()
        try? out.close(); try? err.close()
        let deadline = Deadline(timeout)
        while process.isRunning {
            if deadline.expired {
                process.terminate()
                throw HarnessError.timeout(waitingFor: "\(executable) \(arguments.joined(separator: " "))", after: timeout)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let stdout = (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
        guard process.terminationStatus == 0 else {
            throw HarnessError.commandFailed(command: ([executable] + arguments).joined(separator: " "),
                                             status: process.terminationStatus, output: stderr + stdout)
        }
        return stdout
    }
}

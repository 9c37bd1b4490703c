import Foundation
import QEMUHarness
import Testing

/// libvirt 11.3 (bookworm-backports) starts `vgpu-backend` itself, as users run it: the
/// installed layout (`scripts/install`) with its JSON description, a private libvirtd and
/// virtlogd (`scripts/libvirt-sandbox`: their own namespace and folders, nothing of the host's
/// libvirt touched), and the domain XML of README.md's libvirt section, read from the README
/// itself. Then the traps, each with the line the user gets. Root only (libvirt's system daemon).
@Suite("libvirt", .serialized)
struct LibvirtTests {
    static let domainName = "vgpu-guest"
    /// The folder the README's XML names; the test puts its files in a folder of its own.
    static let readmeFolder = "/var/lib/vgpu-guest/"

    @Test("libvirt starts vgpu-backend: 2D, 3D and the traps", .timeLimit(.minutes(10)))
    func libvirtManagedGuest() async throws {
        let environment = try HarnessEnvironment(locatingFrom: #filePath)
        let rig = try await LibvirtRig(environment: environment)
        defer { rig.tearDown() }
        let started = ContinuousClock.now

        // 2D: the README's domain as is.
        let twoD = try rig.readmeDomain("2d")
        #expect(twoD.contains("<driver name='vhostuser'/>") && twoD.contains("<access mode='shared'/>"))
        try await rig.bootAndCheck(xml: twoD, threeD: false)

        // 3D: the README's accel3d domain; libvirt passes --virgl (the capabilities list virgl).
        let threeD = try rig.readmeDomain("3d")
        #expect(threeD.contains("<acceleration accel3d='yes'/>"))
        try await rig.bootAndCheck(xml: threeD, threeD: true)

        // The trap domains' serial console (the README's XML connects to it; a missing socket
        // fails the start with "unable to stat: .../serial.sock"). SerialConsole takes one
        // connection: a fresh one before each start.
        let serialPath = rig.work.appendingPathComponent("vm/serial.sock").path
        var consoles: [SerialConsole] = []
        defer { consoles.forEach { $0.stop() }; unlink(serialPath) }
        func listen() throws {
            consoles.last?.stop()
            unlink(serialPath)
            consoles.append(try SerialConsole(socketPath: serialPath, logFile: rig.work.appendingPathComponent("serial-trap-\(consoles.count).log")))
            chmod(serialPath, 0o777)
        }

        // Trap: a VNC (or SPICE without GL) display. QEMU 10 refuses the vhost-user GPU console.
        let vnc = twoD.replacingOccurrences(of: "<devices>", with: "<devices>\n    <graphics type='vnc'/>")
        try listen()
        let vncStart = try rig.virsh(["create", rig.write(vnc, as: "vnc.xml")])
        #expect(vncStart.status != 0)
        #expect(vncStart.err.contains("The console requires display DMABUF support"), "\(vncStart.err)")
        try await rig.expectNothingRunning("after the refused VNC domain")

        // Trap: description order. Ours under the old name 50-vgpu-backend.json sorts after
        // Debian's 50-qemu-gpu.json, so libvirt runs QEMU's backend, whose capabilities list
        // render-node: without /dev/dri the domain does not start.
        let qemuDescription = "/usr/share/qemu/vhost-user/50-qemu-gpu.json"
        if FileManager.default.fileExists(atPath: qemuDescription) {
            try rig.renameDescription(to: "50-vgpu-backend.json")
            try listen()
            let start = try rig.virsh(["create", rig.write(twoD, as: "order.xml")])
            if FileManager.default.fileExists(atPath: "/dev/dri") {
                #expect(start.status == 0)
                #expect(rig.backendProcesses().contains { $0.arguments.contains("/usr/lib/qemu/vhost-user-gpu") })
                _ = try rig.virsh(["destroy", Self.domainName])
            } else {
                #expect(start.status != 0)
                #expect(start.err.contains("cannot open directory '/dev/dri'"), "\(start.err)")
            }
            try rig.renameDescription(to: LibvirtRig.descriptionName)
            try await rig.expectNothingRunning("after the description-order trap")
        } else {
            Issue.record("\(qemuDescription) is missing: scripts/setup installs qemu-system-gui")
        }

        // Bad input: a description whose binary is missing. libvirt logs the failed
        // --print-capabilities and falls through to the next description (ours).
        try rig.addDescription(name: "30-missing.json", binary: "/nonexistent/vgpu-backend")
        try listen()
        let missing = try rig.virsh(["create", rig.write(twoD, as: "missing.xml")])
        #expect(missing.status == 0, "\(missing.err)")
        #expect(rig.daemonLog().contains("Child process (/nonexistent/vgpu-backend --print-capabilities) unexpected exit status 127"))
        #expect(rig.backendProcesses().contains { $0.arguments.first == rig.installedBackend })
        _ = try rig.virsh(["destroy", Self.domainName])
        try rig.removeDescription("30-missing.json")
        try await rig.expectNothingRunning("after the missing-binary description")

        // Bad input: a backend that refuses an option libvirt gives it (an older build, a
        // wrapper): its own error line lands in libvirtd's log and libvirt skips it.
        let refusing = try rig.write("#!/bin/sh\nexec \(rig.installedBackend) \"$@\" --no-such-option\n", as: "refusing.sh", mode: 0o755)
        try rig.addDescription(name: "30-refusing.json", binary: refusing)
        try listen()
        let refused = try rig.virsh(["create", rig.write(twoD, as: "refusing.xml")])
        #expect(refused.status == 0, "\(refused.err)")
        #expect(rig.daemonLog().contains("Error: Unknown option '--no-such-option'"))
        _ = try rig.virsh(["destroy", Self.domainName])
        try rig.removeDescription("30-refusing.json")
        try await rig.expectNothingRunning("after the refusing backend")

        // Bad input: guest RAM not shared. libvirt starts the domain; the backend cannot reach
        // the rings and says so. libvirt sends the backend's stderr to /dev/null, so the line is
        // read here through a wrapper that keeps it (README, troubleshooting).
        let backendLog = rig.work.appendingPathComponent("backend-stderr.log").path
        FileManager.default.createFile(atPath: backendLog, contents: nil, attributes: [.posixPermissions: 0o666])
        let logging = try rig.write("#!/bin/sh\nexec \(rig.installedBackend) \"$@\" 2>>\(backendLog)\n", as: "logging.sh", mode: 0o755)
        try rig.addDescription(name: "30-logging.json", binary: logging)
        let unshared = twoD.replacingOccurrences(of: #"<memoryBacking>[\s\S]*?</memoryBacking>\s*"#, with: "", options: .regularExpression)
        #expect(!unshared.contains("memoryBacking"))
        try listen()
        let unsharedStart = try rig.virsh(["create", rig.write(unshared, as: "unshared.xml")])
        #expect(unsharedStart.status == 0, "\(unsharedStart.err)")
        let deadline = ContinuousClock.now + .seconds(60)
        while !((try? String(contentsOfFile: backendLog, encoding: .utf8)) ?? "").contains("is outside guest RAM"),
              ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        let unsharedLog = (try? String(contentsOfFile: backendLog, encoding: .utf8)) ?? ""
        #expect(unsharedLog.contains("VHOST_USER_SET_VRING_KICK: vring 0: guest range") && unsharedLog.contains("is outside guest RAM"),
                "backend stderr: \(unsharedLog)")
        _ = try rig.virsh(["destroy", Self.domainName])
        try rig.removeDescription("30-logging.json")
        try await rig.expectNothingRunning("after the unshared-memory domain")

        print("libvirt: 2D, 3D and the traps in \(ContinuousClock.now - started)")
    }
}

/// A private libvirt, the installed vgpu, the guest's files, and everything to take them down.
final class LibvirtRig: @unchecked Sendable {
    static let descriptionName = "40-vgpu-backend.json"

    let environment: HarnessEnvironment
    let work: URL
    let sandbox: URL
    let uri: String
    let installedBackend: String
    let installedVgpuctl: String
    let qemuUID: UInt32
    /// /tmp/vgpu-<uid>: where a backend run as libvirt-qemu (no XDG_RUNTIME_DIR) puts its
    /// control socket. Removed at the end when this test made it.
    let controlFolder: String
    let controlFolderExisted: Bool
    private var torn = false

    init(environment: HarnessEnvironment) async throws {
        self.environment = environment
        guard getuid() == 0 else { throw HarnessError.missing(what: "root (libvirt's system daemon)", path: "uid \(getuid())", hint: "") }
        let root = environment.packageRoot
        var template = Array("/tmp/vgpu-libvirt-XXXXXX".utf8CString)
        guard let dir = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw HarnessError.socket(operation: "mkdtemp", path: "/tmp", errno: errno)
        }
        work = URL(fileURLWithPath: String(cString: dir))
        chmod(work.path, 0o755)   // QEMU and the backend run as libvirt-qemu
        sandbox = work.appendingPathComponent("libvirt")
        let prefix = work.appendingPathComponent("usr").path
        installedBackend = prefix + "/libexec/vgpu-backend"
        installedVgpuctl = prefix + "/bin/vgpuctl"
        guard let pw = getpwnam("libvirt-qemu") else {
            throw HarnessError.missing(what: "user libvirt-qemu", path: "/etc/passwd", hint: "scripts/setup installs libvirt")
        }
        qemuUID = pw.pointee.pw_uid
        controlFolder = "/tmp/vgpu-\(qemuUID)"
        controlFolderExisted = FileManager.default.fileExists(atPath: controlFolder)

        // 1. Install as a package would (the release build scripts/test made), into the work folder.
        let install = try Self.run(root.appendingPathComponent("scripts/install").path,
                                   ["--no-build", "--prefix", prefix], timeout: .seconds(120))
        guard install.status == 0 else {
            throw HarnessError.commandFailed(command: "scripts/install --no-build --prefix \(prefix)", status: install.status, output: install.err)
        }
        // 2. The guest: the 6.1 kernel and an initramfs with vgpu-guest-test, where the README's XML names them.
        let kernel = try environment.kernel("6.1")
        let program = try environment.guestTestProgram()
        let initramfs = try await environment.initramfs(for: kernel, binaries: [(program, "/bin/vgpu-guest-test")])
        let vm = work.appendingPathComponent("vm")
        try FileManager.default.createDirectory(at: vm, withIntermediateDirectories: true)
        chmod(vm.path, 0o777)
        try FileManager.default.copyItem(at: kernel.image.resolvingSymlinksInPath(), to: vm.appendingPathComponent("vmlinuz"))
        try FileManager.default.copyItem(at: initramfs, to: vm.appendingPathComponent("initrd.img"))
        // 3. libvirtd and virtlogd of our own, with the installed description.
        let description = prefix + "/share/qemu/vhost-user/" + Self.descriptionName
        let start = try Self.run(root.appendingPathComponent("scripts/libvirt-sandbox").path,
                                 ["start", sandbox.path, description], timeout: .seconds(120))
        guard start.status == 0, let uri = start.out.split(separator: "\n").last.map(String.init), uri.hasPrefix("qemu:") else {
            try? FileManager.default.removeItem(at: work)
            throw HarnessError.commandFailed(command: "scripts/libvirt-sandbox start", status: start.status, output: start.err + start.out)
        }
        self.uri = uri
    }

    deinit { tearDown() }

    /// Destroys the domain, stops the daemons, removes every file; then checks nothing is left.
    func tearDown() {
        if torn { return }
        torn = true
        _ = try? virsh(["destroy", LibvirtTests.domainName])
        _ = try? Self.run(environment.packageRoot.appendingPathComponent("scripts/libvirt-sandbox").path,
                          ["stop", sandbox.path], timeout: .seconds(60))
        let leftovers = processes().filter { $0.arguments.joined(separator: " ").contains(work.path) }
        for p in leftovers { kill(p.pid, SIGKILL) }
        #expect(leftovers.isEmpty, "processes left behind: \(leftovers.map(\.arguments))")
        try? FileManager.default.removeItem(at: work)
        if !controlFolderExisted { rmdir(controlFolder) }
        #expect(!FileManager.default.fileExists(atPath: work.path))
        #expect(controlFolderExisted || !FileManager.default.fileExists(atPath: controlFolder), "\(controlFolder) left behind")
    }

    // MARK: The README's domains

    /// The ```xml block after `<!-- libvirt-domain: NAME -->` in README.md, with its folder
    /// (/var/lib/vgpu-guest/) moved to the test's own.
    func readmeDomain(_ name: String) throws -> String {
        let readme = try String(contentsOf: environment.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let marker = "<!-- libvirt-domain: \(name) -->"
        guard let m = readme.range(of: marker), let open = readme.range(of: "```xml\n", range: m.upperBound..<readme.endIndex),
              let close = readme.range(of: "```", range: open.upperBound..<readme.endIndex) else {
            throw HarnessError.missing(what: "README.md domain XML", path: marker, hint: "")
        }
        return readme[open.upperBound..<close.lowerBound].replacingOccurrences(
            of: LibvirtTests.readmeFolder, with: work.appendingPathComponent("vm").path + "/")
    }

    @discardableResult
    func write(_ text: String, as name: String, mode: Int = 0o644) throws -> String {
        let url = work.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        chmod(url.path, mode_t(mode))
        return url.path
    }

    // MARK: Descriptions in the sandbox's /usr/share/qemu/vhost-user

    var descriptionFolder: URL { sandbox.appendingPathComponent("vhost-user") }

    func renameDescription(to name: String) throws {
        let folder = descriptionFolder
        let current = try FileManager.default.contentsOfDirectory(atPath: folder.path).first { $0.hasSuffix("-vgpu-backend.json") }
        guard let current else { throw HarnessError.missing(what: "vgpu-backend description", path: folder.path, hint: "") }
        if current != name { try FileManager.default.moveItem(at: folder.appendingPathComponent(current), to: folder.appendingPathComponent(name)) }
    }

    func addDescription(name: String, binary: String) throws {
        let json = #"{"description": "test", "type": "gpu", "binary": "\#(binary)"}"# + "\n"
        try json.write(to: descriptionFolder.appendingPathComponent(name), atomically: true, encoding: .utf8)
        chmod(descriptionFolder.appendingPathComponent(name).path, 0o644)
    }

    func removeDescription(_ name: String) throws {
        try FileManager.default.removeItem(at: descriptionFolder.appendingPathComponent(name))
    }

    func daemonLog() -> String {
        (try? String(contentsOf: sandbox.appendingPathComponent("libvirtd.log"), encoding: .utf8)) ?? ""
    }

    func domainLog() -> String {
        (try? String(contentsOf: sandbox.appendingPathComponent("log/qemu/\(LibvirtTests.domainName).log"), encoding: .utf8)) ?? ""
    }

    // MARK: One boot

    /// Starts `xml` with virsh and checks what the issue asks: libvirt itself started the
    /// installed vgpu-backend with --fd (and --virgl for 3D) as libvirt-qemu; the guest's
    /// virtio-gpu has +edid (+virgl) and the cross-device feature; the screen (QMP screendump
    /// through virsh) equals the image computed here; vgpuctl lists the device; virsh destroy
    /// ends the backend and removes its control socket.
    func bootAndCheck(xml: String, threeD: Bool) async throws {
        let label = threeD ? "3d" : "2d"
        let serialPath = work.appendingPathComponent("vm/serial.sock").path
        unlink(serialPath)
        let serial = try SerialConsole(socketPath: serialPath, logFile: work.appendingPathComponent("serial-\(label).log"))
        defer { serial.stop(); unlink(serialPath) }
        chmod(serialPath, 0o777)   // QEMU (libvirt-qemu) connects to it

        let bootStart = ContinuousClock.now
        let create = try virsh(["create", write(xml, as: "domain-\(label).xml")], timeout: .seconds(120))
        try #require(create.status == 0, "virsh create (\(label)): \(create.err)\n\(daemonLog())")
        let startTime = ContinuousClock.now - bootStart
        var closed = false
        defer { if !closed { _ = try? virsh(["destroy", LibvirtTests.domainName]) } }

        // libvirt started the installed backend itself: --fd=N, --virgl for 3D, as libvirt-qemu.
        let backends = backendProcesses().filter { $0.arguments.first == installedBackend }
        try #require(backends.count == 1, "backend processes: \(backendProcesses().map(\.arguments))")
        let backend = backends[0]
        #expect(backend.arguments.contains { $0.hasPrefix("--fd=") }, "\(backend.arguments)")
        #expect(backend.arguments.contains("--virgl") == threeD, "\(backend.arguments)")
        #expect(!backend.arguments.contains { $0.hasPrefix("--render-node") }, "no render node on this host: \(backend.arguments)")
        #expect(backend.uid == qemuUID)
        #expect(domainLog().contains("vhost-user-vga"), "the primary video is vhost-user-vga")

        // The guest: the driver's features, then vgpu-guest-test's features and modeset.
        func lines() -> [SerialLine] { serial.lines }
        func waitFor(_ what: String, timeout: Duration = .seconds(120), _ predicate: (SerialLine) -> Bool) async throws -> SerialLine {
            let deadline = ContinuousClock.now + timeout
            while true {
                if let line = lines().first(where: predicate) { return line }
                if let failed = lines().first(where: { $0.text.contains("VGPU-RESULT") && $0.text.contains("status=fail") }) {
                    throw HarnessError.scenarioFailed(name: label, detail: failed.text)
                }
                if ContinuousClock.now > deadline {
                    throw HarnessError.timeout(waitingFor: "\(what) (serial: \(serial.text.suffix(2000)))", after: timeout)
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let features = try await waitFor("[drm] features") { line in
            if case let .dmesg(text)? = line.event { return text.contains("[drm] features:") && text.contains("edid") }
            return false
        }
        #expect(features.text.contains("+edid"), "\(features.text)")
        #expect(features.text.contains(threeD ? "+virgl" : "-virgl"), "\(features.text)")
        _ = try await waitFor("VGPU-READY modeset") { $0.event == .ready(tag: "modeset") }
        var run = GuestProgramRun(kernel: "6.1", backend: "libvirt", isVgpuBackend: true)
        GuestProgramRuns.collect(lines(), into: &run)
        #expect(run.outcome("features").value("features.param.cross_device", "value") == "1",
                "cross-device: \(run.outcome("features").results)")
        #expect(run.verdict("features") != "fail" || run.outcome("features").results.allSatisfy { $0.status != "fail" })

        // The screen, through libvirt's monitor, against the bars computed here.
        let info = run.outcome("modeset").info
        let expected = try #require(GuestProgramRuns.expectedImage(tag: "modeset", info: info), "VGPU-INFO modeset: \(info)")
        let shots = work.appendingPathComponent("shots")
        try FileManager.default.createDirectory(at: shots, withIntermediateDirectories: true)
        chmod(shots.path, 0o777)
        var matched = false
        var last: RGBImage?
        let screenDeadline = ContinuousClock.now + .seconds(30)
        var n = 0
        while ContinuousClock.now < screenDeadline {
            n += 1
            let file = shots.appendingPathComponent("\(label)-\(n).ppm").path
            let command = #"{"execute": "screendump", "arguments": {"filename": "\#(file)", "format": "ppm"}}"#
            let dump = try virsh(["qemu-monitor-command", LibvirtTests.domainName, command])
            if dump.status == 0, let image = try? RGBImage(ppmFile: URL(fileURLWithPath: file)) {
                if image == expected { matched = true; break }
                last = image
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        if !matched, let last {
            try? last.writePNG(to: URL(fileURLWithPath: "/tmp/vgpu-libvirt-\(label)-actual.png"))
            try? expected.writePNG(to: URL(fileURLWithPath: "/tmp/vgpu-libvirt-\(label)-expected.png"))
        }
        #expect(matched, "\(label): screen \(last.map { GuestPattern.describeDifference($0, expected) } ?? "never dumped") (saved /tmp/vgpu-libvirt-\(label)-*.png)")

        // vgpuctl, on the control socket of the backend libvirt started.
        let socket = "\(controlFolder)/\(backend.pid).sock"
        let list = try Self.run(installedVgpuctl, ["list", "--json", "--socket", socket], timeout: .seconds(20))
        #expect(list.status == 0, "vgpuctl list: \(list.err)")
        #expect(list.out.hasPrefix("[") && list.out.count > 2, "vgpuctl list --json: \(list.out.prefix(500))")
        let table = try Self.run(installedVgpuctl, ["--socket", socket, "list"], timeout: .seconds(20))
        #expect(table.status == 0 && table.out.contains("XR24"), "vgpuctl list: \(table.out)\(table.err)")

        // virsh destroy: the backend goes, and its control socket with it.
        let destroy = try virsh(["destroy", LibvirtTests.domainName])
        closed = true
        #expect(destroy.status == 0, "\(destroy.err)")
        try await expectNothingRunning("after virsh destroy (\(label))")
        #expect(!FileManager.default.fileExists(atPath: socket), "control socket \(socket) left behind")
        print("libvirt \(label): virsh create \(startTime), checks done \(ContinuousClock.now - bootStart); \(features.text); backend \(backend.arguments.joined(separator: " "))")
    }

    /// No domain, no QEMU and no vgpu backend of this test within 10 s.
    func expectNothingRunning(_ when: String) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        var left: [ProcessEntry] = []
        repeat {
            left = backendProcesses()
            if left.isEmpty { break }
            try await Task.sleep(for: .milliseconds(100))
        } while ContinuousClock.now < deadline
        #expect(left.isEmpty, "\(when): still running: \(left.map(\.arguments))")
        let list = try virsh(["list", "--all", "--name"])
        #expect(list.out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(when): domains: \(list.out)")
    }

    // MARK: Processes and commands

    struct ProcessEntry { var pid: Int32; var uid: UInt32; var arguments: [String] }

    /// Every process, with its uid and arguments (from /proc).
    func processes() -> [ProcessEntry] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return names.compactMap { name -> ProcessEntry? in
            guard let pid = Int32(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline"), !data.isEmpty else { return nil }
            let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            var st = stat()
            guard stat("/proc/\(name)", &st) == 0 else { return nil }
            return ProcessEntry(pid: pid, uid: st.st_uid, arguments: arguments)
        }
    }

    /// QEMU processes and GPU backends that run as libvirt-qemu or come from this test's folder.
    func backendProcesses() -> [ProcessEntry] {
        processes().filter { p in
            let command = p.arguments.joined(separator: " ")
            let daemon = p.arguments.first.map { $0.hasSuffix("libvirtd") || $0.hasSuffix("virtlogd") } ?? false
            return command.contains(work.path) && !command.contains("libvirt-sandbox") && !daemon
                || (p.uid == qemuUID && (command.contains("vhost-user-gpu") || command.contains("vgpu-backend") || command.contains("qemu-system")))
        }
    }

    func virsh(_ arguments: [String], timeout: Duration = .seconds(60)) throws -> (status: Int32, out: String, err: String) {
        try Self.run("/usr/bin/virsh", ["-c", uri] + arguments, timeout: timeout)
    }

    /// Runs a command with a timeout (killed after it); returns its status and output.
    /// posix_spawn and waitpid, not Foundation's Process, whose exit monitoring stalled here
    /// (a zombie child, isRunning true) once daemons inherited from the child were running.
    static func run(_ executable: String, _ arguments: [String], timeout: Duration) throws -> (status: Int32, out: String, err: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-libvirt-run-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let outPath = dir.appendingPathComponent("out").path, errPath = dir.appendingPathComponent("err").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard rc == 0 else { return (127, "", "posix_spawn \(executable): errno \(rc)") }
        func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { return (-1, read(outPath), "waitpid: errno \(errno)") }
            if ContinuousClock.now > deadline {
                kill(pid, SIGTERM); usleep(500_000); kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                return (124, read(outPath), "timed out after \(timeout): \(executable) \(arguments.joined(separator: " "))\n" + read(errPath))
            }
            usleep(20_000)
        }
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, read(outPath), read(errPath))
    }
}

import ArgumentParser
import CommandLineSupport
import ControlProtocol
import ControlServer
import DisplayChannel
import HostBuffers
import Logging
import Synchronization
import SystemPackage
import VhostUser
import VirtioGPU
import VirglRenderer
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// vgpu-backend: a virtio-gpu vhost-user backend. Takes the same options as QEMU's own
/// `vhost-user-gpu` (they go to the default subcommand, `serve`), so QEMU and libvirt can
/// launch it in its place; `check-host` is the host buffer diagnostic.
@main
struct VGPUBackend: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpu-backend",
        abstract: "virtio-gpu device backend for QEMU over vhost-user.",
        discussion: """
            QEMU: -chardev socket,id=vgpu,path=SOCK -device vhost-user-gpu-pci,chardev=vgpu
            with guest RAM shared (-object memory-backend-memfd,id=mem,size=...,share=on -numa node,memdev=mem).
            The options (vgpu-backend --socket-path PATH ...) are those of 'serve', the default: see 'vgpu-backend help serve'.
            """,
        subcommands: [Serve.self, CheckHost.self],
        defaultSubcommand: Serve.self)
}

/// Serving vhost-user sockets: the default, with QEMU's vhost-user-gpu options.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve virtio-gpu devices over vhost-user (the default: vgpu-backend --socket-path PATH ...).")

    @Option(name: [.short, .customLong("socket-path")], help: "Listen on this UNIX socket path for QEMU. Repeatable: each path is one virtio-gpu device, all sharing one UUID registry.")
    var socketPath: [String] = []

    @Option(name: [.short, .customLong("fd")], help: "Use this inherited, already connected socket fd (libvirt).")
    var fd: Int32?

    @Flag(name: [.customShort("c"), .customLong("print-capabilities")], help: "Print the vhost-user backend capabilities as JSON and exit.")
    var printCapabilities = false

    @Flag(name: [.customShort("v"), .customLong("virgl")], help: "Render the guest's OpenGL with virglrenderer (VIRTIO_GPU_F_VIRGL), on Mesa's surfaceless EGL or on --render-node. One device per process.")
    var virgl = false

    @Option(name: [.customShort("r"), .customLong("render-node")], help: "DRM render node for 3D (used with --virgl; default: the first /dev/dri/renderD*, else Mesa's surfaceless EGL).")
    var renderNode: String?

    @Option(name: [.customLong("max-outputs")], help: "Scanouts the device offers (1-16). QEMU's max_outputs overrides what the guest sees.")
    var maxOutputs: UInt32 = 16

    @Option(name: [.customLong("max-resource-memory")], help: "Host memory cap for all resources of one device, in MiB.")
    var maxResourceMemoryMiB: UInt64 = 1024

    // Long only: QEMU's vhost-user-gpu uses -v for --virgl, and the short options match its.
    @Option(name: [.customLong("max-resources")], help: "Most resources one device holds at once (default 4096).")
    var maxResources: Int = 4096

    @OptionGroup var logging: LoggingOptions

    @Flag(name: [.customLong("keep-running")], help: "With --socket-path: serve the next frontend after one disconnects, instead of exiting.")
    var keepRunning = false

    @Option(name: [.customLong("control-socket")], help: "Control socket for vgpuctl (default: $XDG_RUNTIME_DIR/vgpu/<pid>.sock, or /run/vgpu/<pid>.sock as root).")
    var controlSocket: String?

    @Flag(name: [.customLong("no-control-socket")], help: "Do not open a control socket.")
    var noControlSocket = false

    @Option(name: [.customLong("host-buffers")], help: "Host buffers resources are exported as: auto (the best this host makes: udmabuf over guest RAM, else udmabuf over the host copy, dma-heap, DRM dumb, memfd), udmabuf, drm, heap or memfd. A forced kind this host cannot make is an error.")
    var hostBuffers: HostBufferPreference = .auto

    @Option(name: [.customLong("dmabuf-scanout")], help: "Show scanouts whose resource has a dmabuf through QEMU's DMABUF_SCANOUT/UPDATE: on, off, or auto (on with --virgl, where QEMU's display must have GL). Pixel updates are used otherwise and whenever QEMU stops answering.")
    var dmabufScanout: DMABUFScanoutMode = .auto

    @Flag(name: [.customLong("shared-object-lookup")], help: "Resolve UUIDs no device of this process owns (vgpuctl export) through QEMU's shared-object table (SHARED_OBJECT_LOOKUP). Off by default: measured with QEMU 10.0.2, a LOOKUP of a UUID another vhost-user backend added is answered -22 (EINVAL) with no fd (QEMU does not abort), so it finds nothing today.")
    var sharedObjectLookup = false

    func validate() throws {
        if controlSocket != nil && noControlSocket { throw ValidationError("--control-socket and --no-control-socket cannot be used together") }
        if printCapabilities { return }
        try FrontendEndpoint.validate(hasPath: !socketPath.isEmpty, fd: fd)
        var seen = Set<String>()
        for path in socketPath where !seen.insert(path).inserted {
            throw ValidationError("--socket-path \(path) is given more than once")
        }
        if renderNode != nil && !virgl { throw ValidationError("--render-node is only used with --virgl") }
        if virgl && socketPath.count > 1 { throw ValidationError("--virgl serves one device per process (virglrenderer is process-wide); give one --socket-path") }
        guard (1...16).contains(maxOutputs) else { throw ValidationError("--max-outputs must be between 1 and 16") }
        guard maxResourceMemoryMiB >= 1, maxResourceMemoryMiB <= 1 << 20 else { throw ValidationError("--max-resource-memory must be between 1 and 1048576 MiB") }
        guard (1...1_000_000).contains(maxResources) else { throw ValidationError("--max-resources must be between 1 and 1000000") }
    }

    func run() throws {
        if printCapabilities {
            print(BackendCapabilities.probe().json)
            return
        }
        signal(SIGPIPE, SIG_IGN)   // a closed display socket must be an error return, not a kill
        unblockTerminationSignals() // before any thread starts: every thread inherits the mask
        raiseOpenFileLimit()       // every resource's host copy is a memfd
        logging.bootstrap()
        let logger = Logger(label: "vgpu-backend")
        let registry = ResourceUUIDRegistry()
        let directory = DeviceDirectory()
        let nextDevice = Atomic<UInt32>(0)

        var config = GPUDeviceConfig()
        config.numScanouts = maxOutputs
        config.maxTotalBytes = maxResourceMemoryMiB << 20
        config.maxResources = maxResources
        // auto: only with --virgl, where QEMU's display must have GL (libvirt requires it for
        // accel3d); QEMU's replies cannot tell a GL console from one without (design notes).
        config.dmabufScanout = dmabufScanout == .on || (dmabufScanout == .auto && virgl)
        let deviceConfig = config
        let lookup = sharedObjectLookup
        let allocator: HostBufferAllocator
        do { allocator = try HostBufferAllocator(preference: hostBuffers) } catch { throw ValidationError(error.message) }
        logger.info("host buffers (\(hostBuffers.rawValue)): \(allocator.zeroCopy ? "zero copy over guest RAM with udmabuf; " : "")shadows: \(allocator.shadowKinds.map(\.rawValue).joined(separator: ", "))")
        // virglrenderer is process-wide: one renderer, made once, serves the device (reset between
        // frontends with --keep-running).
        var virglRenderer: VirglGPURenderer?
        if virgl {
            let virglLogger = logger
            do {
                virglRenderer = try VirglGPURenderer(limits: config.normalized.limits, renderNode: renderNode,
                                                     log: { virglLogger.debug("virglrenderer: \($0)") })
            } catch {
                throw ValidationError("--virgl: \(error)")
            }
            logger.info("virgl on \(virglRenderer!.glRenderer) (EGL \(virglRenderer!.platform))")
        }
        let renderer3D = virglRenderer
        let makeDevice: @Sendable (String) -> any VhostUserDevice = { label in
            let id = GPUDeviceID(nextDevice.add(1, ordering: .relaxed).newValue)
            var deviceLogger = logger
            deviceLogger[metadataKey: "device"] = "\(id)"
            let processor = renderer3D.map {
                GPUCommandProcessor(config: deviceConfig, display: NullDisplay(), uuids: registry, deviceID: id, renderer: $0,
                                    events: directory.events, logger: deviceLogger)
            } ?? GPUCommandProcessor(config: deviceConfig, display: NullDisplay(), uuids: registry, deviceID: id,
                                     hostBuffers: allocator, events: directory.events, logger: deviceLogger)
            return VhostUserGPUDevice(processor: processor, logger: deviceLogger, directory: directory, label: label,
                                      sharedObjectLookup: lookup)
        }
        let control = try startControlSocket(directory: directory, logger: logger)
        defer { control?.stop() }

        if let fd {
            try FrontendEndpoint.checkOpen(fd: fd)
            logger.info("serving vhost-user on fd \(fd)")
            VhostUserConnection(socket: OwnedFileDescriptor(fd), device: makeDevice("fd \(fd)"), logger: logger).run()
            return
        }
        // Every socket is bound before any is served, so a bad path fails the start-up.
        let paths = socketPath
        var servers: [VhostUserServer] = []
        for path in paths {
            let listener: OwnedFileDescriptor
            do { listener = try FrontendEndpoint.listen(path: path) } catch {
                for bound in paths.prefix(servers.count) { unlink(bound) }
                throw error
            }
            logger.info("listening on \(path)")
            var socketLogger = logger
            if paths.count > 1 { socketLogger[metadataKey: "socket"] = "\(path)" }
            servers.append(VhostUserServer(listener: listener, logger: socketLogger, makeDevice: { makeDevice(path) }))
        }
        // One listener thread per socket. Without --keep-running each socket serves one
        // frontend and the process exits once all of them have disconnected.
        let keep = keepRunning
        let errors = VhostUserServer.serveAll(servers, shouldContinue: { keep }, finished: { unlink(paths[$0]) })
        if let failure = errors.compactMap({ $0 }).first { throw failure }
    }
}

extension Serve {
    /// The control socket for vgpuctl. An explicit path that cannot be bound is an error; the
    /// default one only warns (the backend is still useful without it).
    func startControlSocket(directory: DeviceDirectory, logger: Logger) throws -> ControlServer? {
        if noControlSocket { return nil }
        let path = controlSocket ?? ControlSocketLocation.defaultPath()
        do {
            let server = try ControlServer(path: path, directory: directory, logger: logger, createDirectory: controlSocket == nil)
            server.start()
            removeOnTermination(path)
            logger.info("control socket \(path)")
            return server
        } catch {
            if controlSocket != nil { throw ValidationError("cannot listen on control socket \(path): \(error)") }
            logger.warning("no control socket: cannot listen on \(path): \(error)")
            return nil
        }
    }
}

/// The control socket path, for the SIGTERM/SIGINT handler (set once, before the handler).
nonisolated(unsafe) private var terminationUnlinkPath: UnsafeMutablePointer<CChar>?

/// On SIGTERM or SIGINT, removes the control socket file and dies of the signal as before, so
/// killed backends leave no socket behind for vgpuctl to trip over (unlink, signal and raise
/// are async-signal-safe).
private func removeOnTermination(_ path: String) {
    terminationUnlinkPath = strdup(path)
    let handler: @convention(c) (Int32) -> Void = { sig in
        if let p = terminationUnlinkPath { unlink(p) }
        signal(sig, SIG_DFL)
        raise(sig)
    }
    signal(SIGTERM, handler)
    signal(SIGINT, handler)
}

/// Unblocks SIGTERM and SIGINT, which a parent may leave blocked in the mask it hands down
/// (a multithreaded launcher's spawn does): the backend must die of them, unlinking its sockets.
func unblockTerminationSignals() {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGTERM)
    sigaddset(&set, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: each resource holds a memfd, and the
/// default soft limit (1024) is below the resource cap.
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(RLIMIT_NOFILE_VALUE, &limit)
}

private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)

/// `vgpu-backend check-host`: tries every host buffer kind for real and says which this host has.
struct CheckHost: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-host",
        abstract: "Try each host buffer kind (udmabuf, dma-heap, DRM dumb, memfd) and print what this host supports.",
        discussion: "Exits 0 when at least memfd works (the backend needs nothing more), 1 otherwise.")

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        let results = HostBufferProbe.probeAll()
        print(json ? HostBufferReport.json(results) : HostBufferReport.table(results), terminator: "")
        let memfdWorks = results.contains { $0.kind == .memfd && $0.status.isAvailable }
        if !memfdWorks { throw ExitCode(1) }
    }
}


extension HostBufferPreference: ExpressibleByArgument {}

/// `--dmabuf-scanout`.
enum DMABUFScanoutMode: String, CaseIterable, ExpressibleByArgument {
    case auto, on, off
}

/// What `--print-capabilities` lists (QEMU's docs/interop/vhost-user.json, type "gpu"), on the
/// host that runs it: libvirt asks at every domain start, and acts on each feature.
/// - `render-node`: libvirt then looks up a DRM render node for every domain, 2D too, and fails
///   the start without `/dev/dri` ("cannot open directory '/dev/dri'"). Listed only when a
///   render node can be opened; libvirt then passes `--render-node=/dev/dri/renderD*`.
/// - `virgl`: libvirt accepts `<acceleration accel3d='yes'/>` and passes `--virgl`. Listed only
///   when virglrenderer starts here (a render node, or Mesa's surfaceless EGL).
struct BackendCapabilities {
    var virgl: Bool
    var renderNode: Bool

    var features: [String] { (virgl ? ["virgl"] : []) + (renderNode ? ["render-node"] : []) }
    var json: String {
        #"{"type": "gpu", "features": ["# + features.map { "\"\($0)\"" }.joined(separator: ", ") + "]}"
    }

    static func probe() -> BackendCapabilities {
        // VGPU_CAPABILITIES_DRI: the folder to look for render nodes in (tests); default /dev/dri.
        let folder = getenv("VGPU_CAPABILITIES_DRI").map { String(cString: $0) } ?? "/dev/dri"
        let node = openableRenderNode(in: folder)
        return BackendCapabilities(virgl: virglStarts(renderNode: node), renderNode: node != nil)
    }

    static func openableRenderNode(in folder: String) -> String? {
        guard let dir = opendir(folder) else { return nil }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasPrefix("renderD") { names.append(name) }
        }
        closedir(dir)
        for name in names.sorted() {
            let path = folder + "/" + name
            let fd = open(path, O_RDWR | O_CLOEXEC)
            if fd >= 0 { close(fd); return path }
        }
        return nil
    }

    /// Starts virglrenderer (EGL on `renderNode`, else surfaceless) in a child process that
    /// exits with _exit, never tearing EGL down: about 0.1 s on llvmpipe. A teardown at exit
    /// aborted about once in 40 runs ("malloc_consolidate(): invalid chunk size"), and a
    /// failing --print-capabilities makes libvirt skip the backend. Nothing of the child
    /// reaches stdout, which libvirt parses as JSON. At most 20 s.
    static func virglStarts(renderNode: String?) -> Bool {
        let child = fork()
        if child < 0 { return false }
        if child == 0 {
            let devNull = open("/dev/null", O_WRONLY)
            if devNull >= 0 { dup2(devNull, 1); dup2(devNull, 2) }
            let ok = (try? VirglRenderer(VirglRendererOptions(renderNode: renderNode))) != nil
            _exit(ok ? 0 : 1)
        }
        var status: Int32 = 0
        for _ in 0..<2000 {
            guard let r = try? retryingEINTR({ waitpid(child, &status, WNOHANG) }) else { return false }
            if r == child { return (status & 0x7f) == 0 && ((status >> 8) & 0xff) == 0 }
            usleep(10_000)
        }
        kill(child, SIGKILL)
        _ = waitpid(child, &status, 0)
        return false
    }
}

import ArgumentParser
import ControlPlane
import DisplayChannel
import Logging
import Synchronization
import SystemPackage
import VhostUser
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif

/// vgpu-backend: a virtio-gpu vhost-user backend. Takes the same options as QEMU's own
/// `vhost-user-gpu`, so QEMU and libvirt can launch it in its place.
@main
struct VGPUBackend: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpu-backend",
        abstract: "virtio-gpu device backend for QEMU over vhost-user.",
        discussion: """
            QEMU: -chardev socket,id=vgpu,path=SOCK -device vhost-user-gpu-pci,chardev=vgpu
            with guest RAM shared (-object memory-backend-memfd,id=mem,size=...,share=on -numa node,memdev=mem).
            """)

    @Option(name: [.short, .customLong("socket-path")], help: "Listen on this UNIX socket path for QEMU.")
    var socketPath: String?

    @Option(name: [.short, .customLong("fd")], help: "Use this inherited, already connected socket fd (libvirt).")
    var fd: Int32?

    @Flag(name: [.short, .customLong("print-capabilities")], help: "Print the vhost-user backend capabilities as JSON and exit.")
    var printCapabilities = false

    @Flag(name: [.customLong("virgl")], help: "Enable virgl 3D rendering (not available in this build).")
    var virgl = false

    @Option(name: [.customLong("render-node")], help: "DRM render node for 3D (used with --virgl).")
    var renderNode: String?

    @Option(name: [.customLong("max-outputs")], help: "Scanouts the device offers (1-16). QEMU's max_outputs overrides what the guest sees.")
    var maxOutputs: UInt32 = 16

    @Option(name: [.customLong("max-resource-memory")], help: "Host memory cap for all resources of one device, in MiB.")
    var maxResourceMemoryMiB: UInt64 = 1024

    @Flag(name: [.short, .long], help: "Log debug messages.")
    var verbose = false

    @Flag(name: [.customLong("keep-running")], help: "With --socket-path: serve the next frontend after one disconnects, instead of exiting.")
    var keepRunning = false

    @Option(name: [.customLong("control-socket")], help: "Control socket for vgpuctl (default: $XDG_RUNTIME_DIR/vgpu/<pid>.sock, or /run/vgpu/<pid>.sock as root).")
    var controlSocket: String?

    @Flag(name: [.customLong("no-control-socket")], help: "Do not open a control socket.")
    var noControlSocket = false

    func validate() throws {
        if controlSocket != nil && noControlSocket { throw ValidationError("--control-socket and --no-control-socket cannot be used together") }
        if printCapabilities { return }
        switch (socketPath, fd) {
        case (nil, nil): throw ValidationError("one of --socket-path or --fd is required")
        case (.some, .some): throw ValidationError("--socket-path and --fd cannot be used together")
        default: break
        }
        if let fd, fd < 0 { throw ValidationError("--fd must be a non-negative file descriptor") }
        if virgl { throw ValidationError("--virgl: 3D rendering is not available in this build of vgpu-backend") }
        if renderNode != nil { throw ValidationError("--render-node is only used with --virgl, which this build does not offer") }
        guard (1...16).contains(maxOutputs) else { throw ValidationError("--max-outputs must be between 1 and 16") }
        guard maxResourceMemoryMiB >= 1, maxResourceMemoryMiB <= 1 << 20 else { throw ValidationError("--max-resource-memory must be between 1 and 1048576 MiB") }
    }

    func run() throws {
        if printCapabilities {
            // vhost-user.json "gpu" capabilities: what libvirt may pass. No virgl/render-node yet.
            print(#"{"type": "gpu", "features": []}"#)
            return
        }
        signal(SIGPIPE, SIG_IGN)   // a closed display socket must be an error return, not a kill
        raiseOpenFileLimit()       // every resource's host copy is a memfd
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = verbose ? .debug : .info
            return handler
        }
        let logger = Logger(label: "vgpu-backend")
        let registry = ResourceUUIDRegistry()
        let directory = DeviceDirectory()
        let nextDevice = Atomic<UInt32>(0)
        let label = socketPath ?? "fd \(fd ?? -1)"

        var config = GPUDeviceConfig()
        config.numScanouts = maxOutputs
        config.maxTotalBytes = maxResourceMemoryMiB << 20
        let deviceConfig = config
        let makeDevice: @Sendable () -> any VhostUserDevice = {
            let id = GPUDeviceID(nextDevice.add(1, ordering: .relaxed).newValue)
            var deviceLogger = logger
            deviceLogger[metadataKey: "device"] = "\(id)"
            let processor = GPUCommandProcessor(config: deviceConfig, display: NullDisplay(), uuids: registry, deviceID: id,
                                                events: directory.events, logger: deviceLogger)
            return GPUVhostUserDevice(processor: processor, logger: deviceLogger, directory: directory, label: label)
        }
        let control = try startControlSocket(directory: directory, logger: logger)
        defer { control?.stop() }

        if let fd {
            guard fcntl(fd, F_GETFD) >= 0 else { throw ValidationError("--fd \(fd): not an open file descriptor") }
            logger.info("serving vhost-user on fd \(fd)")
            VhostUserConnection(socket: OwnedFileDescriptor(fd), device: makeDevice(), logger: logger).run()
            return
        }
        let path = socketPath!
        let listener: OwnedFileDescriptor
        do { listener = try UnixSocket.listen(path: path) } catch {
            throw ValidationError("cannot listen on \(path): \(error)")
        }
        logger.info("listening on \(path)")
        let keep = keepRunning
        try VhostUserServer(listener: listener, logger: logger, makeDevice: makeDevice).serve(shouldContinue: { keep })
        unlink(path)
    }
}

extension VGPUBackend {
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

/// Raises the soft RLIMIT_NOFILE to the hard limit: each resource holds a memfd, and the
/// default soft limit (1024) is below the resource cap.
func raiseOpenFileLimit() {
    var limit = rlimit()
    guard getrlimit(RLIMIT_NOFILE_VALUE, &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(RLIMIT_NOFILE_VALUE, &limit)
}

private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)

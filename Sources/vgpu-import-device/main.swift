import ArgumentParser
import CommandLineSupport
import ImportDevice
import Logging
import VhostUser
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// vgpu-import-device: the host side of the guest importer (docs/importer-protocol.md), a
/// vhost-user backend for QEMU's vhost-user-i2c-pci that resolves virtio-gpu buffers by UUID.
@main
struct VGPUImportDevice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpu-import-device",
        abstract: "Import virtio-gpu buffers by UUID for a guest (vhost-user backend on vhost-user-i2c-pci).",
        discussion: """
            QEMU: -chardev socket,id=imp,path=SOCK -device vhost-user-i2c-pci,chardev=imp
            next to vgpu-backend (-device vhost-user-gpu-pci), with guest RAM shared
            (-object memory-backend-memfd,id=mem,size=...,share=on -numa node,memdev=mem).
            UUIDs are resolved through QEMU's shared-object table (if on), then through each
            --control-socket in order (vgpu-backend's --control-socket).
            A control socket that is missing or refuses at start is reported in one line; imports
            then answer NOT_FOUND when some other socket said not-found, ERROR when none could be asked.
            """)

    @Option(name: [.short, .customLong("socket-path")], help: "Listen on this UNIX socket path for QEMU.")
    var socketPath: String?

    @Option(name: [.short, .customLong("fd")], help: "Use this inherited, already connected socket fd.")
    var fd: Int32?

    @Option(name: [.customLong("control-socket")], help: "A vgpu-backend control socket to resolve UUIDs through. Repeatable: tried in order.")
    var controlSocket: [String] = []

    @Option(name: [.customLong("shared-object-lookup")], help: "Ask QEMU's shared-object table first (BACKEND_SHARED_OBJECT_LOOKUP): on or off. QEMU 10.0.2 answers -22 (measured), so the control socket answers today.")
    var sharedObjectLookup: Switch = .on

    @Option(name: [.customLong("max-handles")], help: "Imported buffers the guest may hold at once (1-65535).")
    var maxHandles: Int = 64

    @Flag(name: [.customShort("c"), .customLong("print-capabilities")], help: "Print the vhost-user backend capabilities as JSON and exit.")
    var printCapabilities = false

    @Flag(name: [.customLong("keep-running")], help: "With --socket-path: serve the next frontend after one disconnects, instead of exiting.")
    var keepRunning = false

    @OptionGroup var logging: LoggingOptions

    enum Switch: String, ExpressibleByArgument, CaseIterable { case on, off }

    func validate() throws {
        if printCapabilities { return }
        try FrontendEndpoint.validate(hasPath: socketPath != nil, fd: fd)
        guard (1...65535).contains(maxHandles) else { throw ValidationError("--max-handles must be between 1 and 65535") }
        for path in controlSocket where path.isEmpty { throw ValidationError("--control-socket needs a path") }
    }

    func run() throws {
        if printCapabilities {
            // vhost-user.json: the device type QEMU creates for it.
            print(#"{"type": "i2c", "features": []}"#)
            return
        }
        signal(SIGPIPE, SIG_IGN)
        logging.bootstrap()
        let logger = Logger(label: "vgpu-import-device")
        if controlSocket.isEmpty {
            guard sharedObjectLookup == .on else {
                throw ValidationError("no --control-socket and --shared-object-lookup off: no UUID could ever be resolved")
            }
            logger.warning("no --control-socket: UUIDs resolve only through QEMU's shared-object table (QEMU 10.0.2 answers -22 to every LOOKUP)")
        } else if sharedObjectLookup == .off {
            // Nothing else could answer: a control socket that cannot be used at all is an error.
            for path in controlSocket {
                var st = stat()
                guard stat(path, &st) == 0 else { throw ValidationError("--control-socket \(path): \(String(cString: strerror(errno)))") }
            }
        }
        let options = ImportDeviceOptions(controlSockets: controlSocket, sharedObjectLookup: sharedObjectLookup == .on, maxHandles: maxHandles)
        if let fd { try FrontendEndpoint.checkOpen(fd: fd) }
        // One device for the whole run (it probes the control sockets now, at start); a frontend
        // leaving releases every handle, so the next one starts clean.
        let device = try ImportVhostUserDevice(options: options, logger: logger)
        defer { device.shutdown() }
        if let fd {
            logger.info("serving vhost-user on fd \(fd)")
            VhostUserConnection(socket: OwnedFileDescriptor(fd), device: device, logger: logger).run()
            return
        }
        let path = socketPath!
        let listener: OwnedFileDescriptor
        listener = try FrontendEndpoint.listen(path: path)
        defer { unlink(path) }
        logger.info("listening on \(path)")
        let server = VhostUserServer(listener: listener, logger: logger) { device }
        let keep = keepRunning
        try server.serve(shouldContinue: { keep })
    }
}

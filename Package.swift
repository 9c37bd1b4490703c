// swift-tools-version: 6.0
// vgpu: a virtio-gpu vhost-user device backend. Layers, bottom up (a module uses only modules of
// lower layers; scripts/check-layers enforces it in scripts/test, README "Architecture" draws it):
//   C           CShims (CMSG/SCM_RIGHTS, ioctls, uapi structs, ring atomics, pixel swizzles),
//               CImportWire (the importer's wire header, FNV digest), CVirglRenderer/CEpoxy/CGBM
//               (system libraries) -> CVirglGlue, CGuestDRM (guest program only)
//   system      SystemSupport: owned fds, eventfds, WorkerThread (the one pthread_create), the
//               fd-passing UNIX socket (MSG_CTRUNC refused), EINTR, polls, clocks, byte fields,
//               the rate-limited logger, PNG
//   mechanisms  VirtioCore (guest memory, split virtqueues, ResourceUUID), HostBuffers (memfd,
//               udmabuf, dma-heap, DRM dumb), VirglRenderer (virgl 3D, one render thread),
//               CommandLineSupport (--verbose, --socket-path/--fd)
//   transports  VhostUser (protocol + server), DisplayChannel (Wire, Transport, Replies, sinks)
//   device      VirtioGPU (dispatch, resources, renderers, the vhost-user device), ControlProtocol
//               (the control socket's versioned JSON and its client; no GPU, no GL)
//   services    ControlServer (inside vgpu-backend), VGPUResolve (importers' client),
//               FrontendSide (test side: plays QEMU and the guest; never in vgpu-backend)
//   importer    ImportDevice
//   fuzzing     VGPUFuzz
//   programs    vgpu-backend, vgpuctl, vgpu-import-device (shipped); vgpu-bench,
//               vgpu-hostbuffer-check, vgpu-fuzz, vgpu-guest-test
// Tests/: VGPUTestSupport (every shared test helper), QEMUHarness (boots real guests), *Tests.
import PackageDescription

let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "vgpu",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vgpu-backend", targets: ["vgpu-backend"]),
        .executable(name: "vgpu-bench", targets: ["vgpu-bench"]),
        .executable(name: "vgpuctl", targets: ["vgpuctl"]),
        .executable(name: "vgpu-hostbuffer-check", targets: ["vgpu-hostbuffer-check"]),
        .executable(name: "vgpu-import-device", targets: ["vgpu-import-device"]),
        .library(name: "VGPUResolve", targets: ["VGPUResolve"]),
        .library(name: "FrontendSide", targets: ["FrontendSide"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // What Swift cannot express: CMSG/SCM_RIGHTS, ioctls, uapi structs, ring atomics, pixel swizzles.
        .target(name: "CShims"),
        // System plumbing every layer uses: owned fds, eventfds, threads, the fd-passing UNIX socket,
        // EINTR, bounded polls, clocks, the rate-limited logger, the PNG encoder.
        .target(name: "SystemSupport", dependencies: [
            "CShims",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // What the daemons' command lines share: --verbose and the logging set-up, the
        // --socket-path/--fd endpoint checks.
        .target(name: "CommandLineSupport", dependencies: [
            "SystemSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // Guest memory map, split virtqueues, and the virtio object UUID (ResourceUUID) every
        // layer names exported resources by. No sockets, no device knowledge.
        .target(name: "VirtioCore", dependencies: ["CShims"], swiftSettings: swiftSettings),
        // vhost-user protocol: codec, fd-passing socket, backend server loop, device protocol.
        .target(name: "VhostUser", dependencies: [
            "CShims", "SystemSupport", "VirtioCore",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // The driver side of vhost-user: memfd guest RAM, driver queues. Used by tests and vgpu-bench.
        .target(name: "FrontendSide", dependencies: [
            "CShims", "CImportWire", "SystemSupport", "VirtioCore", "VhostUser", "DisplayChannel",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftSettings),
        // Host buffers: memfd, udmabuf, dma-heap and DRM dumb buffers; the check-host probes.
        .target(name: "HostBuffers", dependencies: [
            "CShims", "SystemSupport",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftSettings),
        // The vhost-user-gpu display socket to QEMU (docs/interop/vhost-user-gpu.rst).
        .target(name: "DisplayChannel", dependencies: [
            "CShims", "SystemSupport",
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // virtio-gpu: wire structs, command dispatch, resources, scanouts, cursor, UUID registry, 2D renderer.
        .target(name: "VirtioGPU", dependencies: [
            "CShims", "SystemSupport", "VirtioCore", "VhostUser", "DisplayChannel", "HostBuffers", "VirglRenderer",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftSettings),
        // The backend's control socket as its clients see it: the versioned JSON protocol
        // (docs/control-protocol.md), its client connection, the socket's default location, DRM
        // fourcc names. No GPU device and no vhost-user: vgpuctl links no GL library.
        .target(name: "ControlProtocol", dependencies: [
            "CShims", "SystemSupport",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftSettings),
        // The server side, inside vgpu-backend: the socket loop, request handling over the device
        // directory, the `resolve` holds.
        .target(name: "ControlServer", dependencies: [
            "SystemSupport", "ControlProtocol", "VirtioCore", "VirtioGPU",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // virgl 3D: libvirglrenderer, libepoxy and GBM through pkg-config, a thin C glue (EGL
        // contexts and virglrenderer's callbacks), and the VirglRenderer module (one render thread).
        .systemLibrary(name: "CVirglRenderer", pkgConfig: "virglrenderer",
                       providers: [.apt(["libvirglrenderer-dev"])]),
        .systemLibrary(name: "CEpoxy", pkgConfig: "epoxy", providers: [.apt(["libepoxy-dev"])]),
        .systemLibrary(name: "CGBM", pkgConfig: "gbm", providers: [.apt(["libgbm-dev"])]),
        .target(name: "CVirglGlue", dependencies: ["CVirglRenderer", "CEpoxy", "CGBM"]),
        .target(name: "VirglRenderer", dependencies: ["CShims", "SystemSupport", "CVirglRenderer", "CVirglGlue"], swiftSettings: swiftSettings),
        // The importer device's wire structs (guest/vgpu-import/vgpu_import_wire.h, included as is)
        // and the FNV-1a digest loop.
        .target(name: "CImportWire"),
        // Resolving buffers by UUID through a backend's control socket (resolve/release/show/watch),
        // for any backend that imports them, on ControlProtocol's wire types and client: no GPU
        // device, no virglrenderer.
        .target(name: "VGPUResolve", dependencies: [
            "SystemSupport", "ControlProtocol", "VirtioCore",
        ], swiftSettings: swiftSettings),
        // The importer device (vhost-user, on QEMU's vhost-user-i2c-pci): IMPORT/QUERY/RELEASE by UUID.
        .target(name: "ImportDevice", dependencies: [
            "CShims", "CImportWire", "SystemSupport", "VirtioCore", "VhostUser", "VGPUResolve",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "vgpu-import-device", dependencies: [
            "ImportDevice", "CommandLineSupport", "SystemSupport", "VhostUser", "VGPUResolve",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // Fuzz targets (issue 11 §1) and their driver: libFuzzer with `scripts/fuzz`, a replay of
        // the corpora (Fuzz/corpus) in the plain build.
        .target(name: "VGPUFuzz", dependencies: [
            "CShims", "CImportWire", "SystemSupport", "VirtioCore", "VhostUser", "VirtioGPU", "DisplayChannel", "ControlProtocol", "ControlServer", "ImportDevice",
            "VirglRenderer",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "vgpu-fuzz", dependencies: ["VGPUFuzz"], swiftSettings: swiftSettings),
        // Boots real guests under QEMU: initramfs, QMP, serial log, screendumps.
        .target(name: "QEMUHarness", dependencies: ["SystemSupport"], path: "Tests/QEMUHarness", swiftSettings: swiftSettings),
        // Runs inside test guests: drives the guest kernel's virtio-gpu driver (DRM uapi through CGuestDRM).
        // Built static for the initramfs: swift build -c release --static-swift-stdlib --product vgpu-guest-test
        .target(name: "CGuestDRM"),
        .executableTarget(name: "vgpu-guest-test", dependencies: ["CGuestDRM"], swiftSettings: swiftSettings),
        .executableTarget(name: "vgpu-backend", dependencies: [
            "CommandLineSupport", "SystemSupport", "VhostUser", "VirtioGPU", "DisplayChannel", "ControlProtocol", "ControlServer", "HostBuffers", "VirglRenderer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftSettings),
        // VirtioCore only for the UUID type (ResourceUUID): no GPU device, no GL library.
        .executableTarget(name: "vgpuctl", dependencies: [
            "SystemSupport", "ControlProtocol", "VirtioCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),
        // Runs inside a TCG guest on a kernel with udmabuf/dma-heaps/vgem (guest/init's `hostbuffers`):
        // starts vgpu-backend, drives it as the frontend, exports through vgpuctl, checks real dmabufs.
        .executableTarget(name: "vgpu-hostbuffer-check", dependencies: [
            "FrontendSide", "SystemSupport", "VhostUser", "VirtioCore", "DisplayChannel", "CShims",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),
        .executableTarget(name: "vgpu-bench", dependencies: [
            "FrontendSide", "SystemSupport", "VhostUser", "VirtioCore", "DisplayChannel", "CShims", "VGPUResolve", "CImportWire",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftSettings),
        // Every helper the test targets share, once: leak checks, fd passing, guest-RAM mappings,
        // pixel patterns, seeded randomness, a device served on a thread, running product binaries.
        .target(name: "VGPUTestSupport", dependencies: [
            "CShims", "SystemSupport", "VirtioCore", "VhostUser", "FrontendSide", "DisplayChannel",
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/VGPUTestSupport", swiftSettings: swiftSettings),
        // The bottom layer on its own: fd passing (MSG_CTRUNC), WorkerThread, bounded polls.
        .testTarget(name: "SystemSupportTests", dependencies: ["SystemSupport", "VGPUTestSupport", .product(name: "SystemPackage", package: "swift-system")], swiftSettings: swiftSettings),
        .testTarget(name: "VirtioCoreTests", dependencies: ["VGPUTestSupport", "VirtioCore", "CShims"], swiftSettings: swiftSettings),
        .testTarget(name: "VhostUserTests", dependencies: ["VGPUTestSupport", "SystemSupport", "VhostUser", "FrontendSide", "VirtioCore", "CShims", .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .testTarget(name: "DisplayChannelTests", dependencies: ["DisplayChannel", "FrontendSide", "SystemSupport", "CShims", "VGPUTestSupport", .product(name: "SystemPackage", package: "swift-system")], swiftSettings: swiftSettings),
        .testTarget(name: "VirtioGPUTests", dependencies: ["VGPUTestSupport", "FrontendSide", "VirtioGPU", "SystemSupport", "VirtioCore", "CShims", "HostBuffers"], swiftSettings: swiftSettings),
        .testTarget(name: "EndToEndTests", dependencies: ["VGPUTestSupport",
            "FrontendSide", "SystemSupport", "VhostUser", "VirtioGPU", "DisplayChannel", "VirtioCore", "CShims", "ControlProtocol", "ControlServer", "HostBuffers",
            "ImportDevice", "VGPUResolve", "CImportWire",
        ], swiftSettings: swiftSettings),
        .testTarget(name: "HostBuffersTests", dependencies: ["HostBuffers", "SystemSupport", "VGPUTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "ControlTests", dependencies: ["ControlProtocol", "ControlServer", "SystemSupport", "VirtioGPU", "VGPUTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "VirglRendererTests", dependencies: ["VirglRenderer", "SystemSupport", "VGPUTestSupport"], swiftSettings: swiftSettings),
        // Slow: boots QEMU. Run on its own, serialized (scripts/test).
        .testTarget(name: "QEMUTests", dependencies: ["QEMUHarness", "SystemSupport"], swiftSettings: swiftSettings),
    ]
)

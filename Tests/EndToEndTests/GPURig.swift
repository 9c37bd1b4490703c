import CShims
import DisplayChannel
import Foundation
import VGPUTestSupport
import Logging
import SystemPackage
import VhostUser
import FrontendSide
import VirtioCore
import VirtioGPU
import SystemSupport

/// One virtio-gpu device served in process over a real socketpair, driven by the Swift
/// frontend with memfd guest RAM and eventfds, its display channel read by a QEMU-like peer.
final class GPURig {
    let device: VhostUserGPUDevice
    let driver: VirtioGPUDriver
    let peer: DisplayChannelPeer
    let registry: ResourceUUIDRegistry
    private let served: ServedDevice

    static func logger() -> Logger { testLogger(label: "e2e") }

    init(registry: ResourceUUIDRegistry = ResourceUUIDRegistry(), deviceID: UInt32 = 1, config: GPUDeviceConfig = GPUDeviceConfig(numScanouts: 16),
         peerConfig: DisplayChannelPeer.Configuration = DisplayChannelPeer.Configuration(), ramSize: UInt64 = 64 << 20,
         connectDisplay: Bool = true, directory: DeviceDirectory? = nil, backendAckTimeout: Double = 1.0,
         sharedObjectLookup: Bool = false, renderer: (any GPURenderer)? = nil,
         displayOptions: VhostUserGPUDisplay.Options = .init()) throws {
        self.registry = registry
        let logger = Self.logger()
        let processor = renderer.map {
            GPUCommandProcessor(config: config, display: NullDisplay(), uuids: registry, deviceID: GPUDeviceID(deviceID), renderer: $0,
                                events: directory?.events, logger: logger)
        } ?? GPUCommandProcessor(config: config, display: NullDisplay(), uuids: registry, deviceID: GPUDeviceID(deviceID),
                                 events: directory?.events, logger: logger)
        device = VhostUserGPUDevice(processor: processor, logger: logger, directory: directory, label: "rig \(deviceID)",
                                    sharedObjectLookup: sharedObjectLookup, displayOptions: displayOptions)
        served = try ServedDevice(device, logger: logger, backendAckTimeout: backendAckTimeout, threadName: "e2e-conn")
        let frontend = VhostUserFrontend(socket: served.frontendSocket)
        driver = try VirtioGPUDriver(frontend: frontend, ramSize: ramSize)
        let (peer, fd) = try DisplayChannelPeer.connected(configuration: peerConfig)
        self.peer = peer
        if connectDisplay { try frontend.gpuSetSocket(fd.rawValue) }
        try fd.close()
    }

    /// Closes the frontend socket and waits until the server has torn the connection down.
    func disconnect(timeout: Double = 5) -> Bool {
        driver.frontend.disconnect()
        return served.waitFinished(timeout: timeout)
    }

    /// Guest memory holding `bytes`, page aligned.
    func place(_ bytes: [UInt8]) -> GuestPhysicalAddress { driver.place(bytes) }

    /// Creates a resource with backing that holds `pixels` (4 bytes each) and transfers it all.
    func makeResource(id: UInt32, format: UInt32 = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, width: UInt32, height: UInt32,
                      pixels: [UInt8]) throws -> GuestPhysicalAddress {
        try driver.makeResource(id: id, format: format, width: width, height: height, pixels: pixels)
    }

    func check(_ r: VirtioGPUDriver.Response, _ what: String) throws { try driver.check(r, what) }

    /// Waits until head `scanout` shows `pixels` (XRGB, the X byte not compared); false on timeout.
    func headShows(_ pixels: [UInt8], scanout: UInt32 = 0, timeout: Duration = .seconds(5)) -> Bool {
        peer.waitFor(timeout: timeout) { s in
            guard let p = s.framebuffers[scanout]?.pixels, p.count == pixels.count else { return false }
            return (0..<pixels.count).allSatisfy { $0 % 4 == 3 || p[$0] == pixels[$0] }
        }
    }
}

let OK = VIRTIO_GPU_RESP_OK_NODATA.rawValue
let ERR_UNSPEC = VIRTIO_GPU_RESP_ERR_UNSPEC.rawValue
let ERR_OOM = VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY.rawValue
let ERR_SCANOUT = VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID.rawValue
let ERR_RESOURCE = VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID.rawValue
let ERR_PARAMETER = VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER.rawValue

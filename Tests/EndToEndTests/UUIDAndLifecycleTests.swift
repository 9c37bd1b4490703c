import CShims
import DisplayChannel
import Foundation
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore
import VirtioGPU
import SystemSupport

@Suite(.serialized) struct UUIDAndLifecycleTests {
    @Test func uuidIsStableV4AndUniqueAcrossDevices() throws {
        let registry = ResourceUUIDRegistry()
        let a = try GPURig(registry: registry, deviceID: 1)
        let b = try GPURig(registry: registry, deviceID: 2)
        #expect(try a.driver.createResource2D(id: 1, width: 4, height: 4).type == OK)
        #expect(try b.driver.createResource2D(id: 1, width: 4, height: 4).type == OK)   // same guest id, other device
        let ua = try #require((try a.driver.assignUUID(id: 1)).resourceUUID)
        let ub = try #require((try b.driver.assignUUID(id: 1)).resourceUUID)
        #expect(ua != ub)
        #expect(ua[6] >> 4 == 4)             // version 4
        #expect(ua[8] & 0xc0 == 0x80)        // RFC 4122 variant
        #expect((try a.driver.assignUUID(id: 1)).resourceUUID == ua)   // stable
        // Resolvable from the shared registry, naming the right device.
        let uuidA = try #require(ResourceUUID(bytes: ua)), uuidB = try #require(ResourceUUID(bytes: ub))
        let ownerA = try #require(registry.lookup(uuidA))
        let ownerB = try #require(registry.lookup(uuidB))
        #expect(ownerA.device != ownerB.device)
        #expect(ownerA.resource == ResourceID(1) && ownerB.resource == ResourceID(1))
        // UNREF removes it at once.
        #expect(try a.driver.unref(id: 1).type == OK)
        #expect(registry.lookup(uuidA) == nil)
        #expect(registry.lookup(uuidB) != nil)
    }

    @Test func disconnectReleasesResourcesUUIDsAndFDs() throws {
        let registry = ResourceUUIDRegistry()
        let fdsBefore = openFDSet()
        var uuids: [[UInt8]] = []
        do {
            let rig = try GPURig(registry: registry)
            for id in 1...20 as ClosedRange<UInt32> {
                _ = try rig.makeResource(id: id, width: 64, height: 64, pixels: pixelPattern(64, 64))
                uuids.append(try #require((try rig.driver.assignUUID(id: id)).resourceUUID))
            }
            try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, 64, 64)), "scanout")
            #expect(!openFDSet().subtracting(fdsBefore).isEmpty)   // memfds, socket, eventfds
            #expect(rig.disconnect())
        }
        for u in uuids {
            let parsed = try #require(ResourceUUID(bytes: u))
            #expect(registry.lookup(parsed) == nil)
        }
        #expect(fdsLeaked(since: fdsBefore).isEmpty)
    }

    @Test func resetDeviceDropsResources() throws {
        let rig = try GPURig()
        _ = try rig.makeResource(id: 9, width: 8, height: 8, pixels: pixelPattern(8, 8))
        #expect(try rig.driver.frontend.resetDevice())
        #expect(rig.device.processor.snapshot().isEmpty)
    }

    @Test func stalledDisplayDoesNotWedgeTheDevice() throws {
        let rig = try GPURig()
        let (w, h): (UInt32, UInt32) = (1024, 1024)   // 4 MiB frames: more than a socket buffer
        _ = try rig.makeResource(id: 1, width: w, height: h, pixels: [UInt8](repeating: 7, count: Int(w * h * 4)))
        try rig.check(rig.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "scanout")
        rig.peer.stall()
        // Queue a flush the display cannot take, then stop the ring like QEMU at shutdown.
        var f = virtio_gpu_resource_flush()
        f.hdr = VirtioGPUDriver.header(VIRTIO_GPU_CMD_RESOURCE_FLUSH)
        f.resource_id = 1; f.r = VirtioGPUDriver.rect(0, 0, w, h)
        let req = rig.place(withUnsafeBytes(of: f) { Array($0) })
        let resp = rig.driver.ram.allocate(64)
        for _ in 0..<3 { rig.driver.control.add([.init(req, UInt32(MemoryLayout.size(ofValue: f)), writable: false), .init(resp, 24, writable: true)]) }
        rig.driver.control.notifyDevice()
        usleep(200_000)
        let start = monotonicSeconds()
        _ = try rig.driver.frontend.getVringBase(0)
        #expect(monotonicSeconds() - start < 10)
    }

    @Test func tenThousandCreateAssignUnrefCyclesLeakNothing() throws {
        let rig = try GPURig()
        func cycle(_ n: Int) throws {
            for _ in 0..<n {
                #expect(try rig.driver.createResource2D(id: 77, width: 32, height: 32).type == OK)
                #expect((try rig.driver.assignUUID(id: 77)).resourceUUID != nil)
                #expect(try rig.driver.unref(id: 77).type == OK)
            }
        }
        try cycle(200)   // warm up allocator and caches
        let fds = openFDSet(), rss = residentKiB()
        #expect(rss > 0)
        try cycle(10_000)
        #expect(fdsLeaked(since: fds).isEmpty)
        if !underSanitizer {   // no growth per cycle (10,000 × 4 KiB would be 40 MiB)
            #expect(residentKiB() - rss < 8 * 1024)
        }
        #expect(rig.registry.count == 0)
    }
}

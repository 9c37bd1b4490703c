import Foundation
import CShims
import VirtioCore
import SystemSupport
import Testing
@testable import VirtioGPU

@Suite struct ResourceUUIDTests {
    @Test func randomIsVersion4RFC4122() {
        for _ in 0..<100 {
            let u = ResourceUUID.random()
            #expect(u.version == 4)
            #expect(u.isRFC4122Variant)
            #expect(u.bytes[6] >> 4 == 4)
            #expect(u.bytes[8] & 0xC0 == 0x80)
        }
    }

    @Test func bytesTextAndBackAgree() throws {
        let bytes: [UInt8] = [0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0x4D, 0xEF, 0x80, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]
        let u = try #require(ResourceUUID(bytes: bytes))
        #expect(u.bytes == bytes)
        #expect(u.description == "12345678-9abc-4def-8011-223344556677")
        #expect(ResourceUUID(string: "12345678-9ABC-4DEF-8011-223344556677") == u)
        var raw = [UInt8](repeating: 0, count: 16)
        raw.withUnsafeMutableBytes { u.write(to: $0.baseAddress!) }
        #expect(raw == bytes)
    }

    @Test(arguments: ["", "12345678-9abc-4def-8011-22334455667", "12345678x9abc-4def-8011-223344556677", "g2345678-9abc-4def-8011-223344556677"])
    func badTextIsRejected(_ s: String) {
        #expect(ResourceUUID(string: s) == nil)
    }

    @Test func wrongByteCountIsRejected() {
        #expect(ResourceUUID(bytes: [UInt8](repeating: 1, count: 15)) == nil)
    }
}

@Suite struct RegistryTests {
    @Test func assignIsStableLookupAndUnregister() {
        let r = ResourceUUIDRegistry()
        let a = r.assign(device: GPUDeviceID(1), resource: ResourceID(5))
        #expect(r.assign(device: GPUDeviceID(1), resource: ResourceID(5)) == a)
        let b = r.assign(device: GPUDeviceID(2), resource: ResourceID(5))
        #expect(a != b)
        #expect(r.lookup(a) == ResourceOwner(device: GPUDeviceID(1), resource: ResourceID(5)))
        #expect(r.lookup(b) == ResourceOwner(device: GPUDeviceID(2), resource: ResourceID(5)))
        #expect(r.unregister(device: GPUDeviceID(1), resource: ResourceID(5)) == a)
        #expect(r.lookup(a) == nil)
        #expect(r.unregister(device: GPUDeviceID(1), resource: ResourceID(5)) == nil)
        #expect(r.count == 1)
    }

    @Test func collidingGeneratorStillGivesUniqueUUIDs() {
        // A generator that returns the same value 3 times, then fresh ones.
        let calls = Mutex(0)
        let fixed = ResourceUUID(high: 0x1111_1111_1111_4111, low: 0x8111_1111_1111_1111)
        let r = ResourceUUIDRegistry(makeUUID: {
            let n = calls.withLock { c in c += 1; return c }
            return n <= 3 ? fixed : ResourceUUID.random()
        })
        let a = r.assign(device: GPUDeviceID(1), resource: ResourceID(1))
        let b = r.assign(device: GPUDeviceID(1), resource: ResourceID(2))
        #expect(a == fixed)
        #expect(b != fixed)
        #expect(r.lookup(b)?.resource == ResourceID(2))
    }

    @Test func brokenGeneratorCannotAliasResources() {
        let fixed = ResourceUUID(high: 1, low: 2)
        let r = ResourceUUIDRegistry(makeUUID: { fixed })
        let a = r.assign(device: GPUDeviceID(1), resource: ResourceID(1))
        let b = r.assign(device: GPUDeviceID(1), resource: ResourceID(2))
        #expect(a != b)
        #expect(b.version == 4)
    }

    @Test func unregisterAllOnlyTouchesThatDevice() {
        let r = ResourceUUIDRegistry()
        for i in 1...5 { _ = r.assign(device: GPUDeviceID(1), resource: ResourceID(UInt32(i))) }
        let keep = r.assign(device: GPUDeviceID(2), resource: ResourceID(1))
        #expect(r.unregisterAll(device: GPUDeviceID(1)) == 5)
        #expect(r.count == 1)
        #expect(r.lookup(keep) != nil)
    }
}

@Suite struct AssignUUIDCommandTests {
    private func uuid(_ r: Response) -> ResourceUUID? {
        guard r.type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue else { return nil }
        return ResourceUUID(bytes: r.bytes[24..<40])
    }

    @Test func sameUUIDOnSecondCall() throws {
        let h = Harness()
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        let r = h.send(Req.assignUUID(1))
        #expect(r.written == UInt32(MemoryLayout<virtio_gpu_resp_resource_uuid>.size))
        let first = try #require(uuid(r))
        #expect(first.version == 4)
        #expect(uuid(h.send(Req.assignUUID(1))) == first)
        #expect(h.gpu.snapshot()[0].uuid == first)
    }

    @Test func twoDevicesSharingARegistryGetDistinctResolvableUUIDs() throws {
        let registry = ResourceUUIDRegistry()
        let a = Harness(registry: registry, deviceID: 10)
        let b = Harness(registry: registry, deviceID: 20)
        a.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        b.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        let ua = try #require(uuid(a.send(Req.assignUUID(1))))
        let ub = try #require(uuid(b.send(Req.assignUUID(1))))
        #expect(ua != ub)
        #expect(registry.lookup(ua) == ResourceOwner(device: GPUDeviceID(10), resource: ResourceID(1)))
        #expect(registry.lookup(ub) == ResourceOwner(device: GPUDeviceID(20), resource: ResourceID(1)))
    }

    @Test func unrefRemovesTheUUID() throws {
        let registry = ResourceUUIDRegistry()
        let h = Harness(registry: registry)
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        let u = try #require(uuid(h.send(Req.assignUUID(1))))
        #expect(h.send(Req.unref(1)).isOK)
        #expect(registry.lookup(u) == nil)
        #expect(registry.count == 0)
        // A new resource with the same id gets a new UUID.
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        #expect(uuid(h.send(Req.assignUUID(1))) != u)
    }

    /// Regression (issue 11): the UUID observer sat in a `Mutex` of a closure, which Swift
    /// wrapped in two more thunks on every read, so each ASSIGN_UUID and unref made the next
    /// call slower and deeper: a guest looping create/assign/unref would have overflowed the
    /// worker's stack. The observer's call depth must not change with the number of calls.
    @Test func uuidObserverCallDepthStaysFlatOverManyCycles() throws {
        let h = Harness()
        let depths = Mutex<[Int]>([])
        h.gpu.setUUIDObserver { _ in
            let depth = Thread.callStackReturnAddresses.count
            depths.withLock { $0.append(depth) }
        }
        for _ in 0..<1_000 {
            h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
            #expect(uuid(h.send(Req.assignUUID(1))) != nil)
            #expect(h.send(Req.unref(1)).isOK)
        }
        let seen = depths.withLock { $0 }
        #expect(seen.count == 2_000)
        #expect(Set(seen).count == 1, "observer call depth went from \(seen.first ?? 0) to \(seen.max() ?? 0) frames")
    }

    @Test func unknownResource() {
        let h = Harness()
        #expect(h.send(Req.assignUUID(1)).error == .invalidResourceID)
        #expect(h.send(Req.assignUUID(0)).error == .invalidResourceID)
        #expect(h.registry.count == 0)
    }

    @Test func noUUIDUntilAssigned() {
        let h = Harness()
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        #expect(h.gpu.snapshot()[0].uuid == nil)
    }
}

import CShims
import HostBuffers
import Testing
import VGPUTestSupport
import VirtioCore
@testable import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif

/// Which guest pages a zero-copy udmabuf would be made of, and every reason there are none.
/// (The udmabuf itself is made in the 6.12 VM test: this host has no /dev/udmabuf.)
@Suite struct ZeroCopyPlanTests {
    let page = UInt64(pageSize)

    /// Two regions of guest RAM "in" files 41 and 42 (fd numbers are only carried, never used
    /// here), the second at file offset 0x10000; a third region with no file.
    func memory() throws -> (GuestMemory, [AnonymousMapping]) {
        let maps = [AnonymousMapping(size: 1 << 20), AnonymousMapping(size: 1 << 20), AnonymousMapping(size: 1 << 16)]
        let regions = [
            GuestMemoryRegion(guestStart: GuestPhysicalAddress(0x10_0000), size: 1 << 20, frontendStart: FrontendVirtualAddress(0x7000_0000),
                              fileOffset: 0, hostBase: maps[0].base, mapping: maps[0], fileDescriptor: 41),
            GuestMemoryRegion(guestStart: GuestPhysicalAddress(0x20_0000), size: 1 << 20, frontendStart: FrontendVirtualAddress(0x8000_0000),
                              fileOffset: 0x10000, hostBase: maps[1].base, mapping: maps[1], fileDescriptor: 42),
            GuestMemoryRegion(guestStart: GuestPhysicalAddress(0x40_0000), size: 1 << 16, frontendStart: FrontendVirtualAddress(0x9000_0000),
                              fileOffset: 0, hostBase: maps[2].base, mapping: maps[2]),
        ]
        return (try GuestMemory(regions: regions), maps)
    }

    func backing(_ entries: [(UInt64, UInt32)]) -> BackingStore {
        BackingStore(entries: entries.map { BackingEntry(address: GuestPhysicalAddress($0.0), length: $0.1) })
    }

    @Test func pageAlignedEntriesBecomeFileRanges() throws {
        let (m, keep) = try memory()
        let b = backing([(0x10_3000, UInt32(2 * page)), (0x20_0000, UInt32(2 * page))])
        let pages = try ZeroCopyPlan.guestPages(b, memory: m, needed: 4 * page)
        #expect(pages == [MemfdPages(fd: 41, offset: 0x3000, length: 2 * page), MemfdPages(fd: 42, offset: 0x10000, length: 2 * page)])
        withExtendedLifetime(keep) {}
    }

    @Test func contiguousEntriesMergeAndTheTailIsCut() throws {
        let (m, keep) = try memory()
        // Three adjacent pages as three entries, but the buffer needs only 2.5 pages.
        let b = backing([(0x10_0000, UInt32(page)), (0x10_1000, UInt32(page)), (0x10_2000, UInt32(page))])
        let pages = try ZeroCopyPlan.guestPages(b, memory: m, needed: 2 * page + page / 2)
        #expect(pages == [MemfdPages(fd: 41, offset: 0, length: 3 * page)])
        withExtendedLifetime(keep) {}
    }

    @Test func theLastEntryMayEndInsideAPage() throws {
        let (m, keep) = try memory()
        let b = backing([(0x10_0000, UInt32(page)), (0x10_5000, 100)])
        let pages = try ZeroCopyPlan.guestPages(b, memory: m, needed: page + 100)
        #expect(pages == [MemfdPages(fd: 41, offset: 0, length: page), MemfdPages(fd: 41, offset: 0x5000, length: page)])
        withExtendedLifetime(keep) {}
    }

    @Test func everyObstacleIsNamed() throws {
        let (m, keep) = try memory()
        func reason(_ b: BackingStore, _ needed: UInt64) -> String? {
            do { _ = try ZeroCopyPlan.guestPages(b, memory: m, needed: needed); return nil } catch { return error.message }
        }
        #expect(reason(backing([(0x10_0040, UInt32(page))]), page)?.contains("starts 64 bytes into a page") == true)
        #expect(reason(backing([(0x10_0000, 100), (0x10_1000, UInt32(page))]), page + 100)?.contains("not whole pages") == true)
        #expect(reason(backing([(0x10_0000, UInt32(page))]), 2 * page)?.contains("the resource needs") == true)
        #expect(reason(backing([(0x1F_F000, UInt32(2 * page))]), 2 * page)?.contains("not inside one guest RAM region") == true)
        #expect(reason(backing([(0x40_0000, UInt32(page))]), page)?.contains("no file") == true)
        withExtendedLifetime(keep) {}
    }
}

/// Export through the processor with the host buffers this host has (memfd): the host copy is
/// exported, sealed, read-only, and the report says what it is.
@Suite struct HostBufferExportTests {
    @Test func assignUUIDExportsTheHostCopyAndReportsIt() throws {
        let h = Harness()
        h.create(5, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8)
        var image = [UInt8](repeating: 0, count: 16 * 8 * 4)
        let backing = h.attach(5, image: image)
        let before = try #require(h.gpu.resourceInfo(ResourceID(5))).hostBuffer
        #expect(before == HostBufferInfo(kind: .memfd, size: pageSize, coherency: .onTransfer, source: .hostCopy, exported: false))
        #expect(h.send(Req.assignUUID(5)).type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue)
        let after = try #require(h.gpu.resourceInfo(ResourceID(5))).hostBuffer
        #expect(after == HostBufferInfo(kind: .memfd, size: pageSize, coherency: .onTransfer, source: .hostCopy, exported: true))
        #expect(after.handleType == "memfd")

        // The exported fd is read-only and shows each transfer as it lands.
        let (fd, info) = try h.gpu.openHostBuffer(ResourceID(5))
        defer { close(fd) }
        #expect(info == after)
        #expect(vgpu_fcntl_int(fd, F_GETFL, 0) & O_ACCMODE == O_RDONLY)
        #expect(mmap(nil, info.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED)
        let map = try #require(mmap(nil, info.size, PROT_READ, MAP_SHARED, fd, 0))
        defer { munmap(map, info.size) }
        #expect(map.load(fromByteOffset: (3 * 16 + 2) * 4, as: UInt32.self) == 0)
        image.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(0xFF00_0302), toByteOffset: (3 * 16 + 2) * 4, as: UInt32.self) }
        h.guest.write(image, at: backing)
        #expect(map.load(fromByteOffset: (3 * 16 + 2) * 4, as: UInt32.self) == 0, "a host-copy export changes only on transfer")
        #expect(h.send(Req.transfer(5, rect(0, 0, 16, 8), offset: 0)).isOK)
        #expect(map.load(fromByteOffset: (3 * 16 + 2) * 4, as: UInt32.self) == 0xFF00_0302)
        // Sealed: it cannot grow or shrink under the consumer's mapping.
        let seals = vgpu_memfd_get_seals(try #require(h.gpu.hostStorage(of: ResourceID(5))).fd)
        #expect(seals & (vgpu_F_SEAL_SHRINK() | vgpu_F_SEAL_GROW()) == vgpu_F_SEAL_SHRINK() | vgpu_F_SEAL_GROW())
    }

    @Test func unknownResourcesHaveNoHostBuffer() throws {
        let h = Harness()
        #expect(throws: GPUFailure.self) { try h.gpu.openHostBuffer(ResourceID(9)) }
        #expect(h.gpu.renderer.exportResource(ResourceID(9), memory: h.guest.memory) == nil)
    }
}

/// What `--host-buffers` refuses on a host without dmabuf exporters, and what memfd gives.
@Suite struct HostBufferAllocatorTests {
    var missing: HostBufferProbe.Paths {
        var p = HostBufferProbe.Paths()
        p.udmabuf = "/nonexistent/udmabuf"
        p.dmaHeap = "/nonexistent/system"
        p.dri = "/nonexistent/dri"
        return p
    }

    @Test func forcedKindsThatAreMissingAreAnError() {
        for (pref, device) in [(HostBufferPreference.udmabuf, "/nonexistent/udmabuf"), (.heap, "/nonexistent/system"), (.drm, "/nonexistent/dri")] {
            do {
                _ = try HostBufferAllocator(preference: pref, paths: missing)
                Issue.record("\(pref) accepted without its device")
            } catch {
                #expect(error.message.hasPrefix("--host-buffers \(pref.rawValue):"))
                #expect(error.message.contains(device))
                #expect(!error.message.contains("\n"))
            }
        }
    }

    @Test func autoFallsBackToMemfd() throws {
        let a = try HostBufferAllocator(preference: .auto, paths: missing)
        #expect(!a.zeroCopy)
        #expect(a.shadowKinds == [.memfd])
        #expect(a.available == [.memfd])
        #expect(throws: HostBufferError.self) { try a.makeUdmabuf(over: [MemfdPages(fd: 0, offset: 0, length: 4096)], name: "x") }
        #expect(throws: HostBufferError.self) { try a.makeMapped(.dmaHeap, size: 4096, name: "x") }
        let b = try a.makeMapped(.memfd, size: 5000, name: "vgpu:test")
        #expect(b.size == 2 * pageSize)
        #expect(b.base != nil)
        #expect(!b.isDMABuf)
    }
}

/// Where --virgl looks for a GPU when no --render-node is given.
@Suite struct RenderNodeDiscoveryTests {
    @Test func theFirstRenderNodeIsFoundAndCardsAreIgnored() throws {
        let dir = "/tmp/vgpu-dri-\(getpid())"
        mkdir(dir, 0o700)
        defer { for n in ["card0", "renderD129", "renderD128"] { unlink(dir + "/" + n) }; rmdir(dir) }
        #expect(VirglGPURenderer.firstRenderNode(in: dir) == nil)
        for n in ["card0", "renderD129", "renderD128"] { close(open(dir + "/" + n, O_CREAT | O_WRONLY, 0o600)) }
        #expect(VirglGPURenderer.firstRenderNode(in: dir) == dir + "/renderD128")
        #expect(VirglGPURenderer.firstRenderNode(in: "/nonexistent/dri") == nil)
    }
}

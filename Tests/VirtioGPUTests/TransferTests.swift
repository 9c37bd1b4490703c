import CShims
import Testing
import VGPUTestSupport
import VirtioCore
@testable import VirtioGPU

/// A 16×8 resource (stride 64, 512 bytes) whose backing is split over separate guest ranges.
private struct SplitBacking {
    let h: Harness
    let image: [UInt8]
    let entries: [(GuestPhysicalAddress, UInt32)]
    static let width: UInt32 = 16, height: UInt32 = 8, stride = 64

    /// Entry sizes 150, 70, 90, 202: rows of a (3,2,5,4) transfer at offset 140 cross two boundaries.
    init(sizes: [Int] = [150, 70, 90, 202], format: virtio_gpu_formats = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM) {
        h = Harness()
        image = (0..<512).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        h.create(1, format, Self.width, Self.height)
        var entries: [(GuestPhysicalAddress, UInt32)] = []
        var o = 0
        for s in sizes {
            _ = h.guest.alloc(64)   // a gap, so entries are not contiguous in guest RAM
            let a = h.guest.alloc(s)
            h.guest.write(Array(image[o..<(o + s)]), at: a)
            entries.append((a, UInt32(s)))
            o += s
        }
        self.entries = entries
        #expect(h.send(Req.attach(1, entries)).isOK)
    }

    func transfer(_ r: virtio_gpu_rect, offset: UInt64) -> Response { h.send(Req.transfer(1, r, offset: offset)) }
}

@Suite struct TransferTests {
    @Test func subRectWithLinuxStyleOffsetAcrossEntries() {
        let t = SplitBacking()
        #expect(t.transfer(rect(3, 2, 5, 4), offset: 2 * 64 + 3 * 4).isOK)
        var expected = [UInt8](repeating: 0, count: 512)
        for y in 2..<6 {
            let o = y * 64 + 12
            expected.replaceSubrange(o..<(o + 20), with: t.image[o..<(o + 20)])
        }
        #expect(t.h.hostPixels(1) == expected)
    }

    @Test func offsetIsHonouredExactlyAsQEMU() {
        // src = offset + stride*h, dst = (r.y + h)*stride + r.x*4, even when offset does not match the rect.
        let t = SplitBacking()
        #expect(t.transfer(rect(3, 2, 5, 4), offset: 0).isOK)
        var expected = [UInt8](repeating: 0, count: 512)
        for hRow in 0..<4 {
            let dst = (2 + hRow) * 64 + 12
            expected.replaceSubrange(dst..<(dst + 20), with: t.image[(64 * hRow)..<(64 * hRow + 20)])
        }
        #expect(t.h.hostPixels(1) == expected)
    }

    @Test func fullWidthRowsAreOneContiguousCopy() {
        let t = SplitBacking()
        #expect(t.transfer(rect(0, 1, 16, 3), offset: 5).isOK)
        var expected = [UInt8](repeating: 0, count: 512)
        expected.replaceSubrange(64..<256, with: t.image[5..<197])
        #expect(t.h.hostPixels(1) == expected)
    }

    @Test func wholeImageFromOneEntry() {
        let t = SplitBacking(sizes: [512])
        #expect(t.transfer(rect(0, 0, 16, 8), offset: 0).isOK)
        #expect(t.h.hostPixels(1) == t.image)
    }

    @Test func wholeImageFromManyEntries() {
        let t = SplitBacking(sizes: [1, 3, 60, 4, 128, 100, 216])
        #expect(t.transfer(rect(0, 0, 16, 8), offset: 0).isOK)
        #expect(t.h.hostPixels(1) == t.image)
    }

    @Test func emptyRectIsANoOp() {
        let t = SplitBacking()
        #expect(t.transfer(rect(16, 8, 0, 0), offset: 0).isOK)
        #expect(t.h.hostPixels(1) == [UInt8](repeating: 0, count: 512))
    }

    @Test(arguments: [rect(10, 0, 7, 1), rect(0, 0, 17, 1), rect(0, 7, 1, 2), rect(0xFFFF_FFFF, 0, 2, 1),
                      rect(0, 0xFFFF_FFF0, 1, 0x20), rect(17, 0, 0, 0)])
    func rectOutsideResourceIsInvalidParameter(_ r: virtio_gpu_rect) {
        let t = SplitBacking()
        #expect(t.transfer(r, offset: 0).error == .invalidParameter)
        #expect(t.h.hostPixels(1) == [UInt8](repeating: 0, count: 512))
    }

    @Test func backingTooSmall() {
        let t = SplitBacking(sizes: [500])
        #expect(t.transfer(rect(0, 0, 16, 8), offset: 0).error == .invalidParameter)
        #expect(t.transfer(rect(0, 0, 16, 7), offset: 60).error == .invalidParameter)   // needs 508
        #expect(t.h.hostPixels(1) == [UInt8](repeating: 0, count: 512))
        #expect(t.transfer(rect(0, 0, 16, 7), offset: 0).isOK)     // needs 448
        #expect(t.transfer(rect(4, 7, 1, 1), offset: 496).isOK)   // needs exactly 500
    }

    @Test(arguments: [UInt64.max, UInt64.max - 3, UInt64.max - 100, 1 << 63])
    func hugeOffsetsAreInvalidParameter(_ offset: UInt64) {
        let t = SplitBacking()
        #expect(t.transfer(rect(0, 0, 1, 8), offset: offset).error == .invalidParameter)
    }

    @Test func noBackingIsUnspec() {
        let h = Harness()
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        #expect(h.send(Req.transfer(1, rect(0, 0, 4, 4), offset: 0)).error == .unspec)
    }

    @Test func unknownResourceIsInvalidResourceID() {
        #expect(Harness().send(Req.transfer(9, rect(0, 0, 1, 1), offset: 0)).error == .invalidResourceID)
    }

    @Test func entriesAreTranslatedAgainstTheMapPassedIn() throws {
        // Same guest addresses, different host memory behind them: the transfer reads the new map.
        let t = SplitBacking(sizes: [512])
        let req = t.h.guest.readable(Req.transfer(1, rect(0, 0, 16, 8), offset: 0))
        let resp = t.h.guest.writable(24)
        // A copy of guest RAM (so the request is there too) whose backing range holds 0x5A.
        let old = t.h.guest.memory.regions[0]
        let other = AnonymousMapping(size: Int(old.size))
        other.base.copyMemory(from: old.hostBase, byteCount: Int(old.size))
        let backing = t.entries[0].0.raw - old.guestStart.raw
        (other.base + Int(backing)).initializeMemory(as: UInt8.self, repeating: 0x5A, count: 512)
        let remapped = try GuestMemory(regions: [GuestMemoryRegion(guestStart: old.guestStart, size: old.size,
                                                                   frontendStart: old.frontendStart, fileOffset: 0,
                                                                   hostBase: other.base, mapping: other)])
        let n = t.h.gpu.handleControl(DescriptorChain(head: 0, descriptors: [req, resp]), memory: remapped)
        #expect(n == 24)
        #expect(t.h.hostPixels(1) == [UInt8](repeating: 0x5A, count: 512))
    }

    @Test func backingThatLeftGuestRAMIsInvalidParameter() throws {
        let guest = TestGuest(regions: [(0x10_0000, 1 << 20), (0x40_0000, 1 << 20)])
        let h = Harness(guest: guest)
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8)
        #expect(h.send(Req.attach(1, [(GuestPhysicalAddress(0x40_0000), 512)])).isOK)
        let shrunk = try GuestMemory(regions: [guest.memory.regions[0]])
        let req = guest.readable(Req.transfer(1, rect(0, 0, 16, 8), offset: 0))
        let out = guest.writable(24)
        #expect(h.gpu.handleControl(DescriptorChain(head: 0, descriptors: [req, out]), memory: shrunk) == 24)
        #expect(GPUError(responseType: load(virtio_gpu_ctrl_hdr.self, from: guest.read(24, at: out.address)).type) == .invalidParameter)
    }

    @Test func entrySpanningAdjacentRegions() {
        let guest = TestGuest(regions: [(0x10_0000, 1 << 20), (0x20_0000, 1 << 20)])
        let h = Harness(guest: guest)
        let image = (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 1) }
        let a = GuestPhysicalAddress(0x1F_FF00)   // 256 bytes in each region
        guest.write(image, at: a)
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8)
        #expect(h.send(Req.attach(1, [(a, 512)])).isOK)
        #expect(h.send(Req.transfer(1, rect(0, 0, 16, 8), offset: 0)).isOK)
        #expect(h.hostPixels(1) == image)
        #expect(h.send(Req.transfer(1, rect(1, 3, 4, 2), offset: 3 * 64 + 4)).isOK)
    }
}

@Suite struct AttachDetachTests {
    private func fresh(config: GPUDeviceConfig = GPUDeviceConfig(), guest: TestGuest = TestGuest()) -> Harness {
        let h = Harness(config: config, guest: guest)
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 16, 8)
        return h
    }

    @Test func attachRecordsEntriesAndBytesButNoAddresses() {
        let h = fresh()
        let a = h.guest.alloc(512), b = h.guest.alloc(512)
        #expect(h.send(Req.attach(1, [(a, 300), (b, 212)])).isOK)
        let info = h.gpu.snapshot()[0]
        #expect(info.backingEntryCount == 2)
        #expect(info.backingBytes == 512)
    }

    @Test func unknownResource() {
        let h = fresh()
        #expect(h.send(Req.attach(2, [(h.guest.alloc(64), 64)])).error == .invalidResourceID)
    }

    @Test func alreadyBackedIsUnspec() {
        let h = fresh()
        let a = h.guest.alloc(512)
        #expect(h.send(Req.attach(1, [(a, 512)])).isOK)
        #expect(h.send(Req.attach(1, [(a, 512)])).error == .unspec)
    }

    @Test func tooManyEntries() {
        let h = fresh(config: GPUDeviceConfig(maxBackingEntries: 4))
        let entries = (0..<5).map { _ in (h.guest.alloc(64), UInt32(64)) }
        #expect(h.send(Req.attach(1, entries)).error == .invalidParameter)
        #expect(h.send(Req.attach(1, Array(entries.prefix(4)))).isOK)
    }

    @Test func entryCountLargerThanTheChainHolds() {
        let h = fresh()
        let entries = [(h.guest.alloc(64), UInt32(64)), (h.guest.alloc(64), UInt32(64))]
        #expect(h.send(Req.attach(1, entries, nrEntries: 1000)).error == .invalidParameter)
        #expect(h.send(Req.attach(1, entries, nrEntries: 3)).error == .invalidParameter)
        #expect(h.send(Req.attach(1, entries, nrEntries: 0xFFFF_FFFF)).error == .invalidParameter)
        #expect(h.gpu.snapshot()[0].backingEntryCount == 0)
        #expect(h.send(Req.attach(1, entries, nrEntries: 1)).isOK)   // fewer than present is fine
        #expect(h.gpu.snapshot()[0].backingEntryCount == 1)
    }

    @Test func zeroEntriesIsInvalidParameter() {
        #expect(fresh().send(Req.attach(1, [])).error == .invalidParameter)
    }

    @Test func zeroLengthEntry() {
        let h = fresh()
        #expect(h.send(Req.attach(1, [(h.guest.alloc(64), 64), (h.guest.alloc(64), 0)])).error == .invalidParameter)
        #expect(h.gpu.snapshot()[0].backingEntryCount == 0)
    }

    @Test func wrappingEntry() {
        let h = fresh()
        #expect(h.send(Req.attach(1, [(GuestPhysicalAddress(0xFFFF_FFFF_FFFF_FF00), 0x1000)])).error == .invalidParameter)
    }

    @Test(arguments: [UInt64(0x1000), 0x90_0000, 0x8F_FF00, 0xFFFF_FFFF_0000_0000])
    func entryOutsideGuestRAM(_ address: UInt64) {
        // Guest RAM is [0x100000, 0x900000).
        let h = fresh()
        #expect(h.send(Req.attach(1, [(GuestPhysicalAddress(address), 512)])).error == .invalidParameter)
        #expect(h.gpu.snapshot()[0].backingEntryCount == 0)
    }

    @Test func entryIntoAHoleBetweenRegions() {
        let h = fresh(guest: TestGuest(regions: [(0x10_0000, 1 << 20), (0x40_0000, 1 << 20)]))
        #expect(h.send(Req.attach(1, [(GuestPhysicalAddress(0x1F_FF00), 512)])).error == .invalidParameter)
    }

    @Test func detachThenTransferIsUnspecAndReattachWorks() {
        let h = fresh()
        let a = h.guest.alloc(512)
        #expect(h.send(Req.attach(1, [(a, 512)])).isOK)
        #expect(h.send(Req.detach(1)).isOK)
        #expect(h.gpu.snapshot()[0].backingEntryCount == 0)
        #expect(h.send(Req.transfer(1, rect(0, 0, 16, 8), offset: 0)).error == .unspec)
        #expect(h.send(Req.detach(1)).error == .unspec)
        #expect(h.send(Req.attach(1, [(a, 512)])).isOK)
        #expect(h.send(Req.transfer(1, rect(0, 0, 16, 8), offset: 0)).isOK)
    }

    @Test func detachUnknown() {
        #expect(fresh().send(Req.detach(77)).error == .invalidResourceID)
    }
}

import Glibc
import VGPUTestSupport
import VirtioCore

// Test doubles for VirtioCore: regions over anonymous mappings (VGPUTestSupport's) standing in
// for memfd guest RAM, and a driver-side split virtqueue that writes rings the way a guest
// driver does.

/// One region over a fresh mapping (or over `mapping`, which must be at least `size` bytes).
func makeRegion(guest: UInt64, size: Int, frontend: UInt64? = nil, mapping: AnonymousMapping? = nil) -> GuestMemoryRegion {
    let m = mapping ?? AnonymousMapping(size: size)
    return GuestMemoryRegion(guestStart: GuestPhysicalAddress(guest), size: UInt64(size),
                             frontendStart: FrontendVirtualAddress(frontend ?? (0x7f00_0000_0000 + guest)),
                             fileOffset: 0, hostBase: m.base, mapping: m)
}

/// A region description whose memory is never touched (for `GuestMemory.init` validation tests):
/// the host pointer is a small shared mapping regardless of `size`.
/// By default the frontend range mirrors the guest range at a fixed offset (as QEMU's mappings do),
/// so distinct guest ranges never collide in the frontend space.
func fakeRegion(guest: UInt64, size: UInt64, frontend: UInt64? = nil) -> GuestMemoryRegion {
    GuestMemoryRegion(guestStart: GuestPhysicalAddress(guest), size: size,
                      frontendStart: FrontendVirtualAddress(frontend ?? (guest &+ 0x7f00_0000_0000)),
                      fileOffset: 0, hostBase: dummyMapping.base, mapping: dummyMapping)
}

private let dummyMapping = AnonymousMapping(size: 4096)

/// Bytes 0, 1, 2, ... (mod 251 so runs do not line up with powers of two).
func pattern(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 + seed) % 251) }
}

// MARK: - driver side of a split virtqueue

/// Descriptor flags (virtio 1.2, 2.7.5).
enum DescFlag {
    static let next: UInt16 = 1
    static let write: UInt16 = 2
    static let indirect: UInt16 = 4
}

/// The driver half of a split virtqueue in one region of guest RAM, like a guest driver (or
/// virtio-queue's MockSplitQueue). It writes descriptors and the avail ring straight into the
/// mapping and reads the used ring back, never through the code under test.
///
/// Layout, as offsets into the region: descriptor table at 0, avail ring at 0x1000, used ring at
/// 0x2000, data buffers from 0x10000. Guest and frontend addresses differ, so mixing the two
/// address spaces up shows.
final class DriverQueue {
    static let guestBase: UInt64 = 0x4000_0000
    static let frontendBase: UInt64 = 0x7f12_3400_0000
    static let ramSize = 1 << 20
    static let descOffset = 0x0
    static let availOffset = 0x1000
    static let usedOffset = 0x2000
    static let dataOffset = 0x10000

    let mapping: AnonymousMapping
    let memory: GuestMemory
    let size: UInt16
    /// The driver's shadow of avail.idx (the next slot it fills).
    private(set) var availIndex: UInt16

    /// Zeroed rings with avail.idx = used.idx = `startIndex`.
    init(size: UInt16 = 8, startIndex: UInt16 = 0) {
        self.size = size
        mapping = AnonymousMapping(size: Self.ramSize)
        memory = try! GuestMemory(regions: [makeRegion(guest: Self.guestBase, size: Self.ramSize,
                                                      frontend: Self.frontendBase, mapping: mapping)])
        availIndex = startIndex
        store(startIndex, at: Self.availOffset + 2)
        store(startIndex, at: Self.usedOffset + 2)
    }

    var addresses: VringAddresses {
        VringAddresses(descriptorTable: FrontendVirtualAddress(Self.frontendBase + UInt64(Self.descOffset)),
                       availableRing: FrontendVirtualAddress(Self.frontendBase + UInt64(Self.availOffset)),
                       usedRing: FrontendVirtualAddress(Self.frontendBase + UInt64(Self.usedOffset)))
    }

    /// The device side over these rings.
    func makeDevice(eventIndex: Bool = false, nextAvail: UInt16? = nil) throws -> SplitVirtqueue {
        try SplitVirtqueue(size: size, addresses: addresses, memory: memory, eventIndex: eventIndex,
                           nextAvail: nextAvail ?? availIndex)
    }

    /// Guest physical address of `offset` into the region.
    static func gpa(_ offset: Int) -> UInt64 { guestBase + UInt64(offset) }
    /// Guest address of data buffer `n` (4 KiB apart).
    static func buffer(_ n: Int) -> UInt64 { gpa(dataOffset + 0x1000 * n) }

    func store<T: BitwiseCopyable>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= mapping.size)
        (mapping.base + offset).storeBytes(of: value, as: T.self)
    }

    func load<T: BitwiseCopyable>(_ type: T.Type, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= mapping.size)
        return (mapping.base + offset).loadUnaligned(as: T.self)
    }

    /// Writes one 16-byte descriptor into the table at region offset `tableOffset` (the ring's
    /// table by default, or an indirect table).
    func setDescriptor(_ index: Int, addr: UInt64, len: UInt32, flags: UInt16 = 0, next: UInt16 = 0,
                       tableOffset: Int = DriverQueue.descOffset) {
        let e = tableOffset + 16 * index
        store(addr, at: e)
        store(len, at: e + 8)
        store(flags, at: e + 12)
        store(next, at: e + 14)
    }

    /// Writes `buffers` into descriptors `indices` linked by NEXT (readable unless `writable`).
    /// Returns the head index.
    @discardableResult
    func setChain(_ buffers: [(addr: UInt64, len: UInt32, writable: Bool)], indices: [Int]? = nil,
                  tableOffset: Int = DriverQueue.descOffset) -> UInt16 {
        let idx = indices ?? Array(0..<buffers.count)
        precondition(idx.count == buffers.count)
        for (k, b) in buffers.enumerated() {
            let last = k == buffers.count - 1
            let flags = (b.writable ? DescFlag.write : 0) | (last ? 0 : DescFlag.next)
            setDescriptor(idx[k], addr: b.addr, len: b.len, flags: flags, next: last ? 0 : UInt16(idx[k + 1]),
                          tableOffset: tableOffset)
        }
        return UInt16(idx[0])
    }

    /// Puts `head` in the next avail slot and publishes avail.idx.
    func publish(_ head: UInt16) {
        store(head, at: Self.availOffset + 4 + 2 * Int(availIndex % size))
        availIndex &+= 1
        store(availIndex, at: Self.availOffset + 2)
    }

    /// Sets avail.idx without filling ring slots (a misbehaving driver).
    func setAvailIndex(_ value: UInt16) {
        availIndex = value
        store(value, at: Self.availOffset + 2)
    }

    /// avail.flags (bit 0: VRING_AVAIL_F_NO_INTERRUPT).
    func setAvailFlags(_ flags: UInt16) { store(flags, at: Self.availOffset) }
    /// used_event, after the avail ring (VIRTIO_F_EVENT_IDX).
    func setUsedEvent(_ value: UInt16) { store(value, at: Self.availOffset + 4 + 2 * Int(size)) }

    var usedFlags: UInt16 {
        get { load(UInt16.self, at: Self.usedOffset) }
        set { store(newValue, at: Self.usedOffset) }
    }
    var usedIndex: UInt16 { load(UInt16.self, at: Self.usedOffset + 2) }
    /// avail_event, after the used ring (VIRTIO_F_EVENT_IDX).
    var availEvent: UInt16 { load(UInt16.self, at: Self.usedOffset + 4 + 8 * Int(size)) }
    func setAvailEvent(_ value: UInt16) { store(value, at: Self.usedOffset + 4 + 8 * Int(size)) }

    /// The used element in ring slot `slot`.
    func usedElement(_ slot: Int) -> UsedElement {
        UsedElement(id: load(UInt32.self, at: Self.usedOffset + 4 + 8 * slot), len: load(UInt32.self, at: Self.usedOffset + 8 + 8 * slot))
    }
}

/// One used ring entry (struct virtq_used_elem).
struct UsedElement: Equatable, CustomStringConvertible {
    var id: UInt32
    var len: UInt32
    init(_ id: UInt32, _ len: UInt32) { self.id = id; self.len = len }
    init(id: UInt32, len: UInt32) { self.id = id; self.len = len }
    var description: String { "(id \(id), len \(len))" }
}

/// Pops one chain, or nil when the queue is empty.
func pop(_ queue: SplitVirtqueue) throws(VirtqueueError) -> DescriptorChain? {
    var chain = DescriptorChain()
    return try queue.popChain(into: &chain) ? chain : nil
}

/// The error `popChain` throws, or nil if it did not throw.
func popError(_ queue: SplitVirtqueue) -> VirtqueueError? {
    var chain = DescriptorChain()
    do { _ = try queue.popChain(into: &chain); return nil } catch { return error }
}

extension DriverQueue {
    /// Publishes `head` and pops it from a fresh device-side view of the queue.
    func popOne(_ head: UInt16) throws -> DescriptorChain? {
        let queue = try makeDevice()
        publish(head)
        return try pop(queue)
    }

    /// Publishes `head` and returns the error popping it from a fresh device-side view gives.
    func popFailure(_ head: UInt16) throws -> VirtqueueError? {
        let queue = try makeDevice()
        publish(head)
        return popError(queue)
    }
}

import CShims
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The driver side of a split virtqueue in `GuestRAM`: what the guest kernel does. Places
/// chains in the descriptor table, publishes them, kicks, and collects used entries.
public final class DriverQueue {
    public struct Buffer {
        public var address: GuestPhysicalAddress
        public var length: UInt32
        public var writable: Bool
        public init(_ address: GuestPhysicalAddress, _ length: UInt32, writable: Bool) {
            self.address = address; self.length = length; self.writable = writable
        }
    }

    public let size: UInt16
    public let ram: GuestRAM
    public let descriptorTable: GuestPhysicalAddress
    public let availableRing: GuestPhysicalAddress
    public let usedRing: GuestPhysicalAddress
    public let kick: OwnedFileDescriptor
    public let call: OwnedFileDescriptor
    private var freeHeads: [UInt16]
    private var availIdx: UInt16 = 0
    private var lastUsed: UInt16 = 0
    private var indirectTables: [UInt16: GuestPhysicalAddress] = [:]

    public init(ram: GuestRAM, size: UInt16 = 256) throws {
        self.size = size
        self.ram = ram
        descriptorTable = ram.allocate(16 * Int(size), alignment: 16)
        availableRing = ram.allocate(6 + 2 * Int(size), alignment: 2)
        usedRing = ram.allocate(6 + 8 * Int(size), alignment: 4)
        memset(ram.pointer(descriptorTable), 0, 16 * Int(size))
        memset(ram.pointer(availableRing), 0, 6 + 2 * Int(size))
        memset(ram.pointer(usedRing), 0, 6 + 8 * Int(size))
        kick = try EventFD.make()
        call = try EventFD.make()
        freeHeads = (0..<size).reversed().map { $0 }
    }

    /// SET_VRING_ADDR values (frontend virtual addresses, like QEMU sends).
    public var addresses: VringAddressPayload {
        func uva(_ a: GuestPhysicalAddress) -> UInt64 { UInt64(UInt(bitPattern: ram.pointer(a))) }
        return VringAddressPayload(index: 0, descriptor: uva(descriptorTable), used: uva(usedRing), available: uva(availableRing))
    }

    private func writeDescriptor(at table: GuestPhysicalAddress, _ i: Int, _ b: Buffer, next: UInt16?) {
        let p = ram.pointer(table) + 16 * i
        p.storeBytes(of: b.address.raw, as: UInt64.self)
        (p + 8).storeBytes(of: b.length, as: UInt32.self)
        var flags: UInt16 = b.writable ? 2 : 0
        if next != nil { flags |= 1 }
        (p + 12).storeBytes(of: flags, as: UInt16.self)
        (p + 14).storeBytes(of: next ?? 0, as: UInt16.self)
    }

    /// Places a chain and makes it available (without kicking). Returns its head.
    /// `indirect` puts the buffers in an indirect table, as Linux does with VIRTIO_RING_F_INDIRECT_DESC.
    @discardableResult
    public func add(_ buffers: [Buffer], indirect: Bool = false) -> UInt16 {
        if indirect {
            guard let head = freeHeads.popLast() else { preconditionFailure("driver queue full") }
            let table = indirectTables[head] ?? ram.allocate(16 * 64, alignment: 16)
            indirectTables[head] = table
            for (i, b) in buffers.enumerated() { writeDescriptor(at: table, i, b, next: i + 1 < buffers.count ? UInt16(i + 1) : nil) }
            let p = ram.pointer(descriptorTable) + 16 * Int(head)
            p.storeBytes(of: table.raw, as: UInt64.self)
            (p + 8).storeBytes(of: UInt32(16 * buffers.count), as: UInt32.self)
            (p + 12).storeBytes(of: UInt16(4), as: UInt16.self)
            publish(head)
            return head
        }
        precondition(freeHeads.count >= buffers.count, "driver queue full")
        let heads = (0..<buffers.count).map { _ in freeHeads.popLast()! }
        for (i, b) in buffers.enumerated() { writeDescriptor(at: descriptorTable, Int(heads[i]), b, next: i + 1 < heads.count ? heads[i + 1] : nil) }
        publish(heads[0])
        chainHeads[heads[0]] = heads
        return heads[0]
    }
    private var chainHeads: [UInt16: [UInt16]] = [:]

    /// Writes raw descriptor table entries (bad-input tests build loops and wild addresses this way).
    public func writeRawDescriptor(index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        let p = ram.pointer(descriptorTable) + 16 * Int(index)
        p.storeBytes(of: address, as: UInt64.self)
        (p + 8).storeBytes(of: length, as: UInt32.self)
        (p + 12).storeBytes(of: flags, as: UInt16.self)
        (p + 14).storeBytes(of: next, as: UInt16.self)
    }

    /// Makes `head` available as is (after `writeRawDescriptor`).
    public func publish(_ head: UInt16) {
        let avail = ram.pointer(availableRing)
        (avail + 4 + 2 * Int(availIdx % size)).storeBytes(of: head, as: UInt16.self)
        availIdx &+= 1
        vgpu_store_release_u16(avail + 2, availIdx)
    }

    /// Sets avail.idx directly (bad-input tests: index jumps).
    public func setAvailIndex(_ idx: UInt16) {
        availIdx = idx
        vgpu_store_release_u16(ram.pointer(availableRing) + 2, idx)
    }

    public func notifyDevice() { EventFD.signal(kick.rawValue) }

    /// Used entries not yet collected.
    public func collectUsed() -> [(head: UInt16, length: UInt32)] {
        let used = ram.pointer(usedRing)
        let idx = vgpu_load_acquire_u16(used + 2)
        var out: [(UInt16, UInt32)] = []
        while lastUsed != idx {
            let e = used + 4 + 8 * Int(lastUsed % size)
            let head = UInt16(truncatingIfNeeded: e.loadUnaligned(as: UInt32.self))
            out.append((head, (e + 4).loadUnaligned(as: UInt32.self)))
            lastUsed &+= 1
            if let hs = chainHeads.removeValue(forKey: head) { freeHeads.append(contentsOf: hs) } else { freeHeads.append(head) }
        }
        return out
    }

    /// Asks for an interrupt at the next used entry: with VIRTIO_RING_F_EVENT_IDX the device
    /// signals only when used.idx passes avail->used_event (Linux's virtqueue_enable_cb).
    public func requestInterrupt() {
        vgpu_store_release_u16(ram.pointer(availableRing) + 4 + 2 * Int(size), lastUsed)
        vgpu_fence_seq_cst()
    }

    /// Waits up to `timeout` seconds for at least `count` used entries (polling the call eventfd).
    public func waitUsed(count: Int = 1, timeout: Double = 5) -> [(head: UInt16, length: UInt32)] {
        requestInterrupt()
        var got: [(head: UInt16, length: UInt32)] = collectUsed()
        let deadline = monotonicSeconds() + timeout
        while got.count < count {
            if monotonicSeconds() >= deadline { break }
            _ = EventFD.wait(call.rawValue, until: min(deadline, monotonicSeconds() + 0.05))
            EventFD.drain(call.rawValue)
            requestInterrupt()
            got += collectUsed()
        }
        return got
    }
}


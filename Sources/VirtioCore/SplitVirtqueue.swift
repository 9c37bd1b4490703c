import CShims

/// Why a queue could not be walked. Everything here is the driver's fault (a broken or
/// malicious guest); the queue worker logs it and stops the queue rather than guess.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// avail.idx moved by more than the queue size since we last looked (spec 2.7.13.3).
    case availIndexJump(from: UInt16, to: UInt16)
    case headOutOfRange(UInt16)
    /// A `next` field points outside the table (its head can still be returned).
    case nextOutOfRange(head: UInt16, next: UInt16)
    /// More hops than the table has entries: a loop (virtio-queue's hop budget).
    case chainTooLong(head: UInt16)
    case nestedIndirect(head: UInt16)
    case indirectWithNext(head: UInt16)
    case indirectBadLength(head: UInt16, length: UInt32)
    case readableAfterWritable(head: UInt16)
    case lengthOverflow(head: UInt16)
    case memory(head: UInt16?, GuestMemoryError)

    /// The head that can still be handed back in the used ring, if the chain had one.
    public var recoverableHead: UInt16? {
        switch self {
        case .availIndexJump, .headOutOfRange: nil
        case let .nextOutOfRange(h, _), let .chainTooLong(h), let .nestedIndirect(h), let .indirectWithNext(h),
             let .indirectBadLength(h, _), let .readableAfterWritable(h), let .lengthOverflow(h): h
        case let .memory(h, _): h
        }
    }

    public var description: String {
        switch self {
        case let .availIndexJump(a, b): "avail index jumped from \(a) to \(b)"
        case let .headOutOfRange(h): "head \(h) outside the descriptor table"
        case let .nextOutOfRange(h, n): "chain \(h): next \(n) outside the table"
        case let .chainTooLong(h): "chain \(h): loop or longer than the table"
        case let .nestedIndirect(h): "chain \(h): nested indirect table"
        case let .indirectWithNext(h): "chain \(h): INDIRECT together with NEXT"
        case let .indirectBadLength(h, l): "chain \(h): indirect table length \(l)"
        case let .readableAfterWritable(h): "chain \(h): readable descriptor after a writable one"
        case let .lengthOverflow(h): "chain \(h): total length overflows"
        case let .memory(h, e): "chain \(h.map(String.init) ?? "?"): \(e)"
        }
    }
}

/// Ring addresses as the frontend gives them (SET_VRING_ADDR), in its virtual address space.
public struct VringAddresses: Equatable, Sendable {
    public var descriptorTable: FrontendVirtualAddress
    public var availableRing: FrontendVirtualAddress
    public var usedRing: FrontendVirtualAddress
    public init(descriptorTable: FrontendVirtualAddress, availableRing: FrontendVirtualAddress, usedRing: FrontendVirtualAddress) {
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
    }
}

/// The device side of a split virtqueue (virtio 1.2, 2.7). Confined to one worker thread.
public final class SplitVirtqueue {
    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4
    /// Indirect tables larger than this are refused (Linux never makes one past a queue's size).
    public static let maxIndirectEntries = 1024

    public let size: UInt16
    public let eventIndex: Bool
    public private(set) var memory: GuestMemory
    public let addresses: VringAddresses
    /// Next avail ring slot we will read (the vring base reported by GET_VRING_BASE).
    public private(set) var nextAvail: UInt16
    /// Next used ring slot we will write.
    public private(set) var nextUsed: UInt16
    private var lastSignalledUsed: UInt16

    private var desc: UnsafeMutableRawPointer
    private var avail: UnsafeMutableRawPointer
    private var used: UnsafeMutableRawPointer

    /// Translates the rings through `memory`. Fails if any ring is outside guest RAM.
    public init(size: UInt16, addresses: VringAddresses, memory: GuestMemory, eventIndex: Bool,
                nextAvail: UInt16 = 0, nextUsed: UInt16? = nil) throws(GuestMemoryError) {
        precondition(size > 0 && size & (size - 1) == 0, "queue size is validated by the transport")
        self.size = size
        self.eventIndex = eventIndex
        self.memory = memory
        self.addresses = addresses
        self.nextAvail = nextAvail
        (desc, avail, used) = try Self.translate(addresses, size: size, memory: memory)
        // The used index lives in guest memory; after a restart continue from there.
        let usedIdx = nextUsed ?? vgpu_load_acquire_u16(used + 2)
        self.nextUsed = usedIdx
        self.lastSignalledUsed = usedIdx
    }

    private static func translate(_ a: VringAddresses, size: UInt16, memory: GuestMemory) throws(GuestMemoryError)
        -> (UnsafeMutableRawPointer, UnsafeMutableRawPointer, UnsafeMutableRawPointer) {
        let n = Int(size)
        // Virtio 1.2, 2.7: descriptor table 16-, avail 2-, used 4-byte aligned. Misaligned rings
        // would make the index atomics misaligned too.
        for (address, alignment) in [(a.descriptorTable, 16), (a.availableRing, 2), (a.usedRing, 4)]
        where address.raw % UInt64(alignment) != 0 {
            throw .misaligned(address: address.raw, alignment: alignment)
        }
        return (try memory.hostPointer(a.descriptorTable, length: 16 * n),
                try memory.hostPointer(a.availableRing, length: 6 + 2 * n),
                try memory.hostPointer(a.usedRing, length: 6 + 8 * n))
    }

    /// Switches to a new memory map (SET_MEM_TABLE / ADD_MEM_REG while running).
    public func updateMemory(_ memory: GuestMemory) throws(GuestMemoryError) {
        (desc, avail, used) = try Self.translate(addresses, size: size, memory: memory)
        self.memory = memory
    }

    /// Number of chains the driver has made available and we have not popped.
    public func pendingCount() throws(VirtqueueError) -> Int {
        let availIdx = vgpu_load_acquire_u16(avail + 2)
        let pending = availIdx &- nextAvail
        guard pending <= size else { throw .availIndexJump(from: nextAvail, to: availIdx) }
        return Int(pending)
    }

    /// Pops the next available chain into `chain` (reusing its storage). Returns false when none.
    /// On a malformed chain the avail slot is consumed and the error says which head to return.
    public func popChain(into chain: inout DescriptorChain) throws(VirtqueueError) -> Bool {
        guard try pendingCount() > 0 else { return false }
        let slot = Int(nextAvail % size)
        let head = (avail + 4 + 2 * slot).loadUnaligned(as: UInt16.self)
        nextAvail &+= 1
        guard head < size else { throw .headOutOfRange(head) }
        chain.reset(head: head)
        try walk(head: head, into: &chain)
        return true
    }

    private func walk(head: UInt16, into chain: inout DescriptorChain) throws(VirtqueueError) {
        var index = head
        var hops = 0
        var sawWritable = false
        var readable = 0, writable = 0
        while true {
            hops += 1
            guard hops <= Int(size) else { throw .chainTooLong(head: head) }
            let entry = desc + 16 * Int(index)
            let addr = entry.loadUnaligned(as: UInt64.self)
            let len = (entry + 8).loadUnaligned(as: UInt32.self)
            let flags = (entry + 12).loadUnaligned(as: UInt16.self)
            let next = (entry + 14).loadUnaligned(as: UInt16.self)
            if flags & Self.flagIndirect != 0 {
                guard flags & Self.flagNext == 0 else { throw .indirectWithNext(head: head) }
                try walkIndirect(head: head, table: GuestPhysicalAddress(addr), length: len,
                                 chain: &chain, sawWritable: &sawWritable, readable: &readable, writable: &writable)
                break
            }
            try append(head: head, addr: addr, len: len, flags: flags, chain: &chain,
                       sawWritable: &sawWritable, readable: &readable, writable: &writable)
            guard flags & Self.flagNext != 0 else { break }
            guard next < size else { throw .nextOutOfRange(head: head, next: next) }
            index = next
        }
        chain.readableBytes = readable
        chain.writableBytes = writable
    }

    private func walkIndirect(head: UInt16, table: GuestPhysicalAddress, length: UInt32, chain: inout DescriptorChain,
                              sawWritable: inout Bool, readable: inout Int, writable: inout Int) throws(VirtqueueError) {
        guard length > 0, length % 16 == 0, Int(length / 16) <= Self.maxIndirectEntries
        else { throw .indirectBadLength(head: head, length: length) }
        let count = Int(length / 16)
        let base: UnsafeMutableRawPointer
        do { base = try memory.hostPointer(table, length: Int(length)) } catch { throw .memory(head: head, error) }
        var i = 0
        var hops = 0
        while true {
            hops += 1
            guard hops <= count else { throw .chainTooLong(head: head) }
            let entry = base + 16 * i
            let flags = (entry + 12).loadUnaligned(as: UInt16.self)
            guard flags & Self.flagIndirect == 0 else { throw .nestedIndirect(head: head) }
            try append(head: head, addr: entry.loadUnaligned(as: UInt64.self), len: (entry + 8).loadUnaligned(as: UInt32.self),
                       flags: flags, chain: &chain, sawWritable: &sawWritable, readable: &readable, writable: &writable)
            guard flags & Self.flagNext != 0 else { return }
            let next = Int((entry + 14).loadUnaligned(as: UInt16.self))
            guard next < count else { throw .nextOutOfRange(head: head, next: UInt16(next)) }
            i = next
        }
    }

    @inline(__always)
    private func append(head: UInt16, addr: UInt64, len: UInt32, flags: UInt16, chain: inout DescriptorChain,
                        sawWritable: inout Bool, readable: inout Int, writable: inout Int) throws(VirtqueueError) {
        let isWritable = flags & Self.flagWrite != 0
        if isWritable { sawWritable = true } else if sawWritable { throw .readableAfterWritable(head: head) }
        // Each buffer must be guest RAM; checked here once so handlers never see a wild address.
        do { try memory.validate(GuestPhysicalAddress(addr), length: Int(len)) } catch { throw .memory(head: head, error) }
        if isWritable { writable += Int(len) } else { readable += Int(len) }
        // Chains total at most size * 1024 * 4 GiB; Int cannot overflow on 64-bit, but cap for sanity.
        guard readable <= Int(UInt32.max), writable <= Int(UInt32.max) else { throw .lengthOverflow(head: head) }
        chain.descriptors.append(Descriptor(address: GuestPhysicalAddress(addr), length: len, isWritable: isWritable))
    }

    /// Returns a chain to the driver with `length` bytes written. Publishes the index with release order.
    public func addUsed(head: UInt16, length: UInt32) {
        let slot = Int(nextUsed % size)
        let elem = used + 4 + 8 * slot
        elem.storeBytes(of: UInt32(head), as: UInt32.self)
        (elem + 4).storeBytes(of: length, as: UInt32.self)
        nextUsed &+= 1
        vgpu_store_release_u16(used + 2, nextUsed)
    }

    /// Whether the driver wants an interrupt for what was added since the last signal
    /// (VIRTIO_F_EVENT_IDX's used_event, else avail.flags NO_INTERRUPT). Call after `addUsed`.
    public func needsNotification() -> Bool {
        vgpu_fence_seq_cst()
        let old = lastSignalledUsed
        let new = nextUsed
        guard old != new else { return false }
        lastSignalledUsed = new
        if eventIndex {
            let usedEvent = vgpu_load_acquire_u16(avail + 4 + 2 * Int(size))
            return (new &- usedEvent &- 1) < (new &- old)
        }
        return vgpu_load_acquire_u16(avail) & 1 == 0
    }

    /// Tells the driver which avail index should kick us next (event idx), then re-checks for
    /// work that raced with it. Returns true if more chains are already pending.
    public func enableKicks() throws(VirtqueueError) -> Bool {
        if eventIndex {
            vgpu_store_release_u16(used + 4 + 8 * Int(size), nextAvail)
        } else {
            vgpu_store_release_u16(used, 0)   // clear VRING_USED_F_NO_NOTIFY
        }
        vgpu_fence_seq_cst()
        return try pendingCount() > 0
    }
}

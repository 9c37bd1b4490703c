import VGPUResolve
import VirtioCore

/// One imported buffer.
struct Slot: Sendable {
    let uuid: ResourceUUID
    /// The control socket that resolved it (index), or -1: QEMU's shared-object table only.
    let source: Int
    /// A `resolve` hold to `release` on that socket.
    var held: Bool
    /// VGPU_IMPORT_PATH_* and the shared-object status of the IMPORT.
    let path: UInt32
    let soStatus: Int32
    let layout: ResolvedLayout
    let geometry: DigestGeometry
    /// nil once revoked: unmapped and closed, the handle answers REVOKED until RELEASE.
    var mapping: BufferMapping?
}

/// The handles one driver holds: a fixed array of slots made once (no allocation per request).
/// A handle is (generation << 16) | (slot + 1): never 0, and a released handle's number is not
/// valid again until its slot's generation comes round (65536 reuses).
struct HandleTable {
    private var slots: [Slot?]
    private var generations: [UInt16]

    init(capacity: Int) {
        slots = Array(repeating: nil, count: capacity)
        generations = Array(repeating: 0, count: capacity)
    }

    var hasFreeSlot: Bool { slots.contains { $0 == nil } }
    var inUse: Int { slots.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
    var mapped: Int { slots.reduce(0) { $0 + ($1?.mapping == nil ? 0 : 1) } }

    /// Stores `slot`; nil when every slot is taken.
    mutating func insert(_ slot: Slot) -> UInt32? {
        guard let i = slots.firstIndex(where: { $0 == nil }) else { return nil }
        generations[i] &+= 1
        slots[i] = slot
        return UInt32(generations[i]) << 16 | UInt32(i + 1)
    }

    private func index(_ handle: UInt32) -> Int? {
        let i = Int(handle & 0xFFFF) - 1
        guard i >= 0, i < slots.count, slots[i] != nil, UInt16(handle >> 16) == generations[i] else { return nil }
        return i
    }

    func slot(_ handle: UInt32) -> Slot? { index(handle).flatMap { slots[$0] } }

    /// Unmaps and closes; the handle stays (REVOKED) until RELEASE. The hold went with the resource.
    mutating func revoke(_ handle: UInt32) {
        guard let i = index(handle) else { return }
        slots[i]?.mapping = nil
        slots[i]?.held = false
    }

    /// Revokes every mapped slot `matches` selects; returns how many.
    mutating func revokeAll(where matches: (Slot) -> Bool) -> Int {
        var n = 0
        for i in slots.indices {
            guard let s = slots[i], s.mapping != nil, matches(s) else { continue }
            slots[i]?.mapping = nil
            slots[i]?.held = false
            n += 1
        }
        return n
    }

    mutating func remove(_ handle: UInt32) -> Slot? {
        guard let i = index(handle) else { return nil }
        defer { slots[i] = nil }
        return slots[i]
    }

    mutating func removeAll() -> [Slot] {
        let all = slots.compactMap { $0 }
        for i in slots.indices { slots[i] = nil }
        return all
    }
}

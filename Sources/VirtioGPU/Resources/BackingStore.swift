import CShims
import DisplayChannel
import VirtioCore

/// One guest range from RESOURCE_ATTACH_BACKING (`virtio_gpu_mem_entry`).
///
/// Guest DMA namespace (design notes, section 3): used only to read guest memory during
/// transfers. Never exported, never shown as an identity, never a lookup key.
public struct BackingEntry: Equatable, Sendable {
    public let address: GuestPhysicalAddress
    public let length: UInt32

    public init(address: GuestPhysicalAddress, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// The guest pages behind a resource, in order: backing byte offset 0 is the first byte of the
/// first entry. Entries are translated against the memory map at transfer time, because the map
/// can change between ATTACH_BACKING and a transfer.
public struct BackingStore: Sendable {
    public let entries: [BackingEntry]
    /// Sum of the entry lengths (cannot overflow: at most 2^32 entries of < 2^32 bytes).
    public let totalLength: UInt64

    /// Checks every entry before anything is kept (spec 5.7.6.8; anchors: every guest buffer
    /// checked before any side effect): non-empty, `addr + length` does not wrap, and the range
    /// is guest RAM in `memory` (it may span adjacent regions). Failures are
    /// `invalidParameter`.
    public init(validating wire: [virtio_gpu_mem_entry], memory: GuestMemory) throws(GPUFailure) {
        var entries: [BackingEntry] = []
        entries.reserveCapacity(wire.count)
        var total: UInt64 = 0
        for (i, e) in wire.enumerated() {
            guard e.length > 0 else { throw .invalidParameter("backing entry \(i) has length 0") }
            let address = GuestPhysicalAddress(e.addr)
            guard address.checkedAdd(UInt64(e.length)) != nil else {
                throw .invalidParameter("backing entry \(i) wraps: \(address)+\(e.length)")
            }
            do { try memory.validate(address, length: Int(e.length)) }
            catch { throw .invalidParameter("backing entry \(i): \(error)") }
            entries.append(BackingEntry(address: address, length: e.length))
            total &+= UInt64(e.length)
        }
        self.entries = entries
        self.totalLength = total
    }

    /// Built from already checked entries (tests, renderers that keep their own lists).
    public init(entries: [BackingEntry]) {
        self.entries = entries
        self.totalLength = entries.reduce(0) { $0 &+ UInt64($1.length) }
    }
}

extension BackingStore {
    /// TRANSFER_TO_HOST_2D's bounds rule (QEMU's): row h of `rect` is read from backing offset
    /// `offset + stride * h`, `rect.width * 4` bytes; the last byte read must lie in the backing.
    /// Overflow-checked. Throws `invalidParameter` naming the bytes needed.
    public func checkTransfer(of rect: PixelRect, offset: UInt64, stride: UInt64) throws(GPUFailure) {
        guard !rect.isEmpty else { return }
        let rowBytes = UInt64(rect.width) * 4
        let (lastRow, o1) = stride.multipliedReportingOverflow(by: UInt64(rect.height - 1))
        let (lastRowStart, o2) = offset.addingReportingOverflow(lastRow)
        let (end, o3) = lastRowStart.addingReportingOverflow(rowBytes)
        guard !o1, !o2, !o3, end <= totalLength else {
            throw .invalidParameter("transfer of \(rect) at offset \(offset) needs backing bytes up to \(o1 || o2 || o3 ? "overflow" : String(end)), the backing has \(totalLength)")
        }
    }
}

/// Reads a backing front to back for one command: each entry is translated to a host pointer at
/// most once (when the copy first reaches it), and nothing is allocated. Source offsets passed to
/// `copy` must not decrease.
struct BackingReader: ~Copyable {
    private let entries: [BackingEntry]
    private let memory: GuestMemory
    private var index = 0
    private var entryStart: UInt64 = 0          // backing offset of entries[index]
    private var translated = false
    private var host: UnsafeMutableRawPointer?  // nil after translation: the entry spans regions

    init(_ backing: BackingStore, memory: GuestMemory) {
        self.entries = backing.entries
        self.memory = memory
    }

    /// Copies `count` bytes starting at backing offset `offset` to `destination`.
    mutating func copy(from offset: UInt64, count: Int, to destination: UnsafeMutableRawPointer) throws(GPUFailure) {
        var offset = offset
        var done = 0
        while done < count {
            guard offset >= entryStart else { throw .invalidParameter("transfer source offsets went backwards") }
            while index < entries.count, offset - entryStart >= UInt64(entries[index].length) {
                entryStart &+= UInt64(entries[index].length)
                index += 1
                translated = false
            }
            guard index < entries.count else {
                throw .invalidParameter("transfer reads past the end of the backing")
            }
            let entry = entries[index]
            let within = offset - entryStart
            let n = min(count - done, Int(UInt64(entry.length) - within))
            if !translated {
                // One translation per entry per command, against the map passed in now.
                host = try? memory.hostPointer(entry.address, length: Int(entry.length))
                translated = true
            }
            if let host {
                // Safety: `within + n <= entry.length`, and the entry was translated as one range.
                (destination + done).copyMemory(from: host + Int(within), byteCount: n)
            } else {
                // The entry spans adjacent regions (or left guest RAM since attach): copy through
                // the region-aware reader, which checks the range.
                guard let src = entry.address.checkedAdd(within) else {
                    throw .invalidParameter("backing entry \(index) wraps")
                }
                do { try memory.read(into: UnsafeMutableRawBufferPointer(start: destination + done, count: n), from: src) }
                catch { throw .invalidParameter("backing entry \(index) is no longer guest RAM: \(error)") }
            }
            done += n
            offset &+= UInt64(n)
        }
    }
}

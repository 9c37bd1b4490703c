/// Errors from guest memory access. Each names what the guest asked for, for the log.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No region holds `[address, address+length)` (or it spans a hole between regions).
    case outOfBounds(address: UInt64, length: Int)
    /// The range wraps past 2^64 or has a negative length.
    case overflow(address: UInt64, length: Int)
    /// Regions given to `GuestMemory.init` overlap or are empty.
    case invalidRegion(String)
    /// A structure the spec requires aligned (a vring part) is not.
    case misaligned(address: UInt64, alignment: Int)

    public var description: String {
        switch self {
        case let .outOfBounds(a, l): "guest range 0x\(String(a, radix: 16))+\(l) is outside guest RAM"
        case let .overflow(a, l): "guest range 0x\(String(a, radix: 16))+\(l) overflows"
        case let .invalidRegion(why): "invalid memory region: \(why)"
        case let .misaligned(a, n): "address 0x\(String(a, radix: 16)) is not \(n)-byte aligned"
        }
    }
}

/// One mapped region of guest RAM.
/// @unchecked: the pointer is immutable and the memory behind it is shared with the guest by design.
public struct GuestMemoryRegion: @unchecked Sendable {
    public let guestStart: GuestPhysicalAddress
    public let size: UInt64
    /// Where the frontend has this region mapped (vring addresses are in this space).
    public let frontendStart: FrontendVirtualAddress
    /// Offset of the region within the file `mapping` came from (udmabuf needs file offsets).
    public let fileOffset: UInt64
    /// The file the region is mapped from (a memfd with QEMU's memory-backend-memfd), or -1.
    /// Borrowed: owned by `mapping` and valid while it is alive. Used only to make udmabufs
    /// over guest pages (zero-copy host buffers); never an identity.
    public let fileDescriptor: Int32
    /// Our mapping of the region. Valid while `mapping` is alive.
    public let hostBase: UnsafeMutableRawPointer
    /// Keeps the host mapping (and its fd) alive; unmaps on deinit.
    public let mapping: any Sendable & AnyObject

    public init(guestStart: GuestPhysicalAddress, size: UInt64, frontendStart: FrontendVirtualAddress,
                fileOffset: UInt64, hostBase: UnsafeMutableRawPointer, mapping: any Sendable & AnyObject,
                fileDescriptor: Int32 = -1) {
        self.fileDescriptor = fileDescriptor
        self.guestStart = guestStart
        self.size = size
        self.frontendStart = frontendStart
        self.fileOffset = fileOffset
        self.hostBase = hostBase
        self.mapping = mapping
    }

    var guestEnd: UInt64 { guestStart.raw &+ size }   // validated not to wrap in GuestMemory.init
}


/// An immutable map of guest RAM. A new map is built for every memory-table change and
/// published whole; queue workers hold one snapshot per batch, so a region stays mapped while
/// any command still uses it.
public final class GuestMemory: Sendable {
    /// Sorted by guest address, non-overlapping.
    public let regions: [GuestMemoryRegion]

    public init(regions: [GuestMemoryRegion]) throws(GuestMemoryError) {
        let sorted = regions.sorted { $0.guestStart < $1.guestStart }
        for r in sorted {
            guard r.size > 0 else { throw .invalidRegion("empty region at \(r.guestStart)") }
            guard r.guestStart.checkedAdd(r.size) != nil, r.frontendStart.raw.addingReportingOverflow(r.size).overflow == false
            else { throw .invalidRegion("region at \(r.guestStart) size \(r.size) wraps") }
            guard r.size <= UInt64(Int.max) else { throw .invalidRegion("region too large") }
        }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.guestEnd > b.guestStart.raw {
            throw .invalidRegion("regions at \(a.guestStart) and \(b.guestStart) overlap")
        }
        // Vring addresses are translated through the frontend ranges: they must not overlap either.
        let byFrontend = sorted.sorted { $0.frontendStart.raw < $1.frontendStart.raw }
        for (a, b) in zip(byFrontend, byFrontend.dropFirst()) where a.frontendStart.raw + a.size > b.frontendStart.raw {
            throw .invalidRegion("frontend ranges at \(a.frontendStart) and \(b.frontendStart) overlap")
        }
        self.regions = sorted
    }

    public static let empty = try! GuestMemory(regions: [])

    /// Total bytes of guest RAM mapped.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    @inline(__always)
    func regionIndex(containing address: UInt64) -> Int? {
        // Few regions (≤ 8 usually, 509 at most): binary search keeps it cheap either way.
        var lo = 0, hi = regions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let r = regions[mid]
            if address < r.guestStart.raw { hi = mid } else if address >= r.guestEnd { lo = mid + 1 } else { return mid }
        }
        return nil
    }

    /// Host pointer to `length` contiguous bytes at `address`; the whole range must lie in one region.
    @inlinable
    public func hostPointer(_ address: GuestPhysicalAddress, length: Int) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        try hostPointerImpl(address.raw, length: length)
    }

    @usableFromInline
    func hostPointerImpl(_ address: UInt64, length: Int) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        guard length >= 0, address.addingReportingOverflow(UInt64(length)).overflow == false
        else { throw .overflow(address: address, length: length) }
        guard let i = regionIndex(containing: address) else { throw .outOfBounds(address: address, length: length) }
        let r = regions[i]
        let offset = address - r.guestStart.raw
        guard UInt64(length) <= r.size - offset else { throw .outOfBounds(address: address, length: length) }
        // Safety: offset + length <= region size, checked above.
        return r.hostBase + Int(offset)
    }

    /// The region and offset holding `address` with at least `length` bytes after it.
    public func locate(_ address: GuestPhysicalAddress, length: Int) throws(GuestMemoryError) -> (region: GuestMemoryRegion, offset: UInt64) {
        _ = try hostPointerImpl(address.raw, length: length)
        let r = regions[regionIndex(containing: address.raw)!]
        return (r, address.raw - r.guestStart.raw)
    }

    /// Host pointer for a frontend virtual address range (vring addresses), within one region.
    public func hostPointer(_ address: FrontendVirtualAddress, length: Int) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        guard length >= 0, address.raw.addingReportingOverflow(UInt64(length)).overflow == false
        else { throw .overflow(address: address.raw, length: length) }
        for r in regions where address.raw >= r.frontendStart.raw && address.raw - r.frontendStart.raw < r.size {
            let offset = address.raw - r.frontendStart.raw
            guard UInt64(length) <= r.size - offset else { break }
            return r.hostBase + Int(offset)
        }
        throw .outOfBounds(address: address.raw, length: length)
    }

    /// Copies guest bytes into `buffer`; the range may span adjacent regions.
    public func read(into buffer: UnsafeMutableRawBufferPointer, from address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try forEachChunk(address.raw, buffer.count) { host, done, n in
            buffer.baseAddress!.advanced(by: done).copyMemory(from: host, byteCount: n)
        }
    }

    /// Copies `bytes` into guest memory; the range may span adjacent regions.
    public func write(_ bytes: UnsafeRawBufferPointer, to address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try validate(address, length: bytes.count)   // all or nothing: no partial writes
        try forEachChunk(address.raw, bytes.count) { host, done, n in
            host.copyMemory(from: bytes.baseAddress!.advanced(by: done), byteCount: n)
        }
    }

    /// Reads a plain value (C struct, integer) from guest memory. Unaligned addresses are fine,
    /// and so is a value straddling two adjacent regions (like `read`).
    public func load<T: BitwiseCopyable>(_ type: T.Type, from address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        // Fast path: the value lies in one region (nearly always).
        do { return try hostPointerImpl(address.raw, length: size).loadUnaligned(as: T.self) } catch {
            guard case .outOfBounds = error, size > 0 else { throw error }
        }
        // Otherwise copy it out piecewise; `read` throws if it is not all guest RAM.
        return try withUnsafeTemporaryAllocation(byteCount: size, alignment: MemoryLayout<T>.alignment) {
            (scratch: UnsafeMutableRawBufferPointer) throws(GuestMemoryError) -> T in
            try read(into: scratch, from: address)
            return scratch.baseAddress!.load(as: T.self)
        }
    }

    /// Writes a plain value to guest memory, all or nothing; it may straddle adjacent regions.
    public func store<T: BitwiseCopyable>(_ value: T, to address: GuestPhysicalAddress) throws(GuestMemoryError) {
        let size = MemoryLayout<T>.size
        // Fast path: the value lies in one region (nearly always).
        do { return try hostPointerImpl(address.raw, length: size).storeBytes(of: value, as: T.self) } catch {
            guard case .outOfBounds = error, size > 0 else { throw error }
        }
        // Otherwise write it piecewise; `write` checks the whole range first.
        var v = value
        // withUnsafeBytes cannot forward a typed throw; capture the error instead.
        var failure: GuestMemoryError?
        withUnsafeBytes(of: &v) { raw in
            do throws(GuestMemoryError) { try write(raw, to: address) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Checks that `[address, address+length)` is guest RAM (possibly over adjacent regions).
    public func validate(_ address: GuestPhysicalAddress, length: Int) throws(GuestMemoryError) {
        try forEachChunk(address.raw, length) { _, _, _ in }
    }

    private func forEachChunk(_ address: UInt64, _ length: Int,
                              _ body: (UnsafeMutableRawPointer, Int, Int) -> Void) throws(GuestMemoryError) {
        guard length >= 0, address.addingReportingOverflow(UInt64(length)).overflow == false
        else { throw .overflow(address: address, length: length) }
        var done = 0
        var cursor = address
        while done < length {
            guard let i = regionIndex(containing: cursor) else { throw .outOfBounds(address: address, length: length) }
            let r = regions[i]
            let offset = cursor - r.guestStart.raw
            let n = Int(min(UInt64(length - done), r.size - offset))
            body(r.hostBase + Int(offset), done, n)
            done += n
            cursor += UInt64(n)
        }
    }
}

import CShims
import SystemPackage
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// Guest RAM the way QEMU provides it with `memory-backend-memfd,share=on`: memfd-backed regions
/// mapped in this process, handed to the backend with SET_MEM_TABLE. Also a bump allocator so
/// tests and benchmarks can place rings and buffers at guest physical addresses.
public final class GuestRAM {
    public struct Region {
        public let guestStart: UInt64
        public let size: UInt64
        public let mapping: SharedFileMapping
        public var frontendAddress: UInt64 { UInt64(UInt(bitPattern: mapping.base)) }
    }

    public let regions: [Region]
    private var next: [UInt64]   // bump pointer per region (offset)

    /// Regions given as (guest start, size); sizes must be page multiples. Like QEMU's
    /// `memory-backend-memfd` (seal=on, the default), each memfd is sealed against shrinking and
    /// growing, which is what lets a backend make udmabufs over guest pages; `sealed: false`
    /// gives the unsealed RAM of `seal=off`.
    public init(layout: [(guestStart: UInt64, size: UInt64)], sealed: Bool = true) throws {
        var regions: [Region] = []
        for (start, size) in layout {
            let fd = vgpu_memfd_create("vgpu-guest-ram", UInt32(MFD_CLOEXEC | MFD_ALLOW_SEALING))
            guard fd >= 0 else { throw Errno(rawValue: errno) }
            let owned = OwnedFileDescriptor(fd)
            guard ftruncate(fd, off_t(size)) == 0 else { throw Errno(rawValue: errno) }
            if sealed {
                guard vgpu_memfd_add_seals(fd, vgpu_F_SEAL_SHRINK() | vgpu_F_SEAL_GROW()) == 0 else { throw Errno(rawValue: errno) }
            }
            regions.append(Region(guestStart: start, size: size, mapping: try SharedFileMapping(file: owned, length: Int(size))))
        }
        self.regions = regions
        self.next = Array(repeating: 0, count: regions.count)
    }

    /// One region of `size` bytes at guest address 0.
    public convenience init(size: UInt64, sealed: Bool = true) throws { try self.init(layout: [(0, size)], sealed: sealed) }

    /// The SET_MEM_TABLE payload describing these regions, and their fds.
    public var memoryTable: (MemoryTablePayload, [Int32]) {
        (MemoryTablePayload(regions: regions.map {
            MemoryRegionPayload(guestAddress: $0.guestStart, size: $0.size, userAddress: $0.frontendAddress, mmapOffset: 0)
        }), regions.map { $0.mapping.file.rawValue })
    }

    /// Reserves `size` bytes aligned to `alignment` in region `region`; returns the guest address.
    public func allocate(_ size: Int, alignment: Int = 64, region: Int = 0) -> GuestPhysicalAddress {
        let a = UInt64(alignment)
        let offset = (next[region] + a - 1) / a * a
        precondition(offset + UInt64(size) <= regions[region].size, "test guest RAM exhausted")
        next[region] = offset + UInt64(size)
        return GuestPhysicalAddress(regions[region].guestStart + offset)
    }

    /// Forgets every allocation (reuse the RAM for another round).
    public func resetAllocations() { next = Array(repeating: 0, count: regions.count) }

    /// Host pointer to a guest address (the frontend maps all of guest RAM, as QEMU does).
    public func pointer(_ address: GuestPhysicalAddress) -> UnsafeMutableRawPointer {
        for r in regions where address.raw >= r.guestStart && address.raw < r.guestStart + r.size {
            return r.mapping.base + Int(address.raw - r.guestStart)
        }
        preconditionFailure("\(address) is not in test guest RAM")
    }

    public func write<T: BitwiseCopyable>(_ value: T, at address: GuestPhysicalAddress) {
        pointer(address).storeBytes(of: value, as: T.self)
    }

    public func write(_ bytes: [UInt8], at address: GuestPhysicalAddress) {
        bytes.withUnsafeBytes { pointer(address).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    public func read<T: BitwiseCopyable>(_ type: T.Type, at address: GuestPhysicalAddress) -> T {
        pointer(address).loadUnaligned(as: T.self)
    }

    public func bytes(at address: GuestPhysicalAddress, count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: pointer(address), count: count))
    }
}

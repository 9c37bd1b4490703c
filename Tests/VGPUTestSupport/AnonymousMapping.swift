#if canImport(Glibc)
import Glibc
#endif

/// An anonymous private mapping, unmapped on deinit: guest RAM for one region in tests.
/// @unchecked: the pointer never changes; tests touch the memory from one task at a time.
public final class AnonymousMapping: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let size: Int

    /// `readWrite: false` reserves address space only (PROT_NONE): for regions that are validated
    /// but never touched, such as multi-gigabyte regions in length-overflow tests.
    public init(size: Int, readWrite: Bool = true) {
        let prot = readWrite ? PROT_READ | PROT_WRITE : PROT_NONE
        let p = mmap(nil, size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        precondition(p != nil && p != MAP_FAILED, "mmap of \(size) bytes failed")
        base = p!
        self.size = size
    }

    deinit { munmap(base, size) }

    /// The bytes at `offset..<offset+count` of the mapping, read directly (not through GuestMemory).
    public func bytes(at offset: Int, count: Int) -> [UInt8] {
        precondition(offset >= 0 && offset + count <= size)
        return Array(UnsafeRawBufferPointer(start: base + offset, count: count))
    }

    /// Writes `bytes` at `offset` directly into the mapping.
    public func setBytes(_ bytes: [UInt8], at offset: Int) {
        precondition(offset >= 0 && offset + bytes.count <= size)
        bytes.withUnsafeBytes { (base + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    public func fill(_ value: UInt8) { memset(base, Int32(value), size) }
}

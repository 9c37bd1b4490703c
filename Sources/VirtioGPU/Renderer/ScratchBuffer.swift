#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A malloc'd buffer that only grows; freed on release/deinit.
struct ScratchBuffer: ~Copyable {
    private var pointer: UnsafeMutableRawPointer?
    private(set) var capacity = 0

    init() {}

    /// At least `bytes` bytes, or nil if the allocation fails.
    mutating func reserve(_ bytes: Int) -> UnsafeMutableRawPointer? {
        if bytes <= capacity, let pointer { return pointer }
        // Round up to 64 KiB so slowly growing flushes do not realloc every time.
        let (rounded, overflow) = bytes.addingReportingOverflow(0xFFFF)
        guard !overflow else { return nil }
        let newCapacity = rounded & ~0xFFFF
        guard let p = realloc(pointer, newCapacity) else { return nil }
        pointer = p
        capacity = newCapacity
        return p
    }

    mutating func release() {
        free(pointer)
        pointer = nil
        capacity = 0
    }

    deinit { free(pointer) }
}

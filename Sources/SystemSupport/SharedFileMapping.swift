// A shared mmap of a file, unmapped when dropped (guest RAM regions, host buffer probes).

import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// A shared mapping of a file, unmapped on deinit. Owns the fd (kept for exports later).
/// @unchecked: immutable after init; the mapped memory is shared with the guest by design.
public final class SharedFileMapping: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int
    public let file: OwnedFileDescriptor

    /// The SIGBUS guard slot over this mapping (`vgpu_sigbus_guard_register`), or -1.
    private let guardSlot: Int32
    /// The eventfd the guard signals on a fault, kept open as long as the guard can write to it.
    private let faultSignal: OwnedFileDescriptor?

    /// With `faultSignal`, a SIGBUS inside the mapping (its file shrank under it: an unsealed
    /// memfd a lying frontend truncated) is caught: zero pages replace the range, `faulted`
    /// turns true and `faultSignal` is signalled, instead of the process dying.
    public init(file: OwnedFileDescriptor, length: Int, writable: Bool = true, faultSignal: OwnedFileDescriptor? = nil) throws(Errno) {
        let prot = PROT_READ | (writable ? PROT_WRITE : 0)
        guard let p = mmap(nil, length, prot, MAP_SHARED, file.rawValue, 0), p != MAP_FAILED else {
            throw Errno(rawValue: errno)
        }
        var slot: Int32 = -1
        if let faultSignal {
            slot = vgpu_sigbus_guard_register(p, length, faultSignal.rawValue)
            guard slot >= 0 else {
                munmap(p, length)
                throw .tooManyOpenFiles   // every guard slot is in use
            }
        }
        base = p
        self.length = length
        self.file = file
        self.guardSlot = slot
        self.faultSignal = faultSignal
    }

    /// Whether a SIGBUS was caught in this mapping (it now reads zeros).
    public var faulted: Bool { guardSlot >= 0 && vgpu_sigbus_guard_faulted(guardSlot) != 0 }

    deinit {
        // The guard goes first: a fault after the munmap is not ours to catch.
        if guardSlot >= 0 { vgpu_sigbus_guard_unregister(guardSlot) }
        munmap(base, length)
    }
}

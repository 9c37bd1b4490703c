// Commands in a SUBMIT_3D stream that the virglrenderer this project links (Debian bookworm's
// 0.10.4) handles without checking what the guest gave it, checked here before the stream
// reaches it.
//
// VIRGL_CCMD_GET_MEMORY_INFO (50) names a resource; vrend_renderer_get_meminfo writes a
// 24-byte virgl_memory_info through that resource's first iovec without checking that there is
// one or that it is long enough: a resource without backing is a NULL dereference (found by the
// `virgl` fuzz target: SIGSEGV in libvirglrenderer.so.1, the process gone), a first backing
// entry under 24 bytes an out-of-bounds write. Read in virglrenderer's vrend_renderer.c and in
// the public report of the same bug against ChromiumOS's copy.

/// Walks a SUBMIT_3D stream's command headers (per command, not per word of payload).
enum VirglStreamGuard {
    static let getMemoryInfo: UInt32 = 50
    /// sizeof(struct virgl_memory_info): six uint32_t.
    static let memoryInfoBytes: UInt32 = 24

    /// The resource handles the stream's GET_MEMORY_INFO commands name. A header is
    /// `command | object << 8 | length << 16`, followed by `length` words; the walk stops where
    /// virglrenderer's decoder would (a length past the end).
    static func memoryInfoTargets(_ stream: UnsafeRawBufferPointer) -> [UInt32] {
        let words = stream.count / 4
        var targets: [UInt32] = []
        var i = 0
        while i < words {
            let header = stream.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self).littleEndian
            let length = Int(header >> 16)
            guard i + 1 + length <= words else { break }
            if header & 0xff == getMemoryInfo, length >= 1 {
                targets.append(stream.loadUnaligned(fromByteOffset: (i + 1) * 4, as: UInt32.self).littleEndian)
            }
            i += 1 + length
        }
        return targets
    }
}

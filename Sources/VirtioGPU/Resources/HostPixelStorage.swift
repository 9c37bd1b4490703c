import HostBuffers
import Synchronization

/// The host copy of a resource's pixels: a mapped host buffer (a memfd from RESOURCE_CREATE_2D,
/// or, once the resource is exported as a dma-heap or DRM dumb shadow, that dmabuf), written by
/// TRANSFER_TO_HOST_2D and read by flushes and the cursor. Pixels start at offset 0, `width * 4`
/// bytes a row; the buffer may be longer than `length` (rounded up to pages).
///
/// Host buffer namespace (design notes, section 3). The memory is written only by the
/// control-queue worker (transfers) and read by the flush path on that same worker and, under
/// the resource-table lock, by the cursor worker.
public final class HostPixelStorage: @unchecked Sendable {
    public let buffer: HostBuffer
    /// Start of the buffer's read-write mapping.
    public let base: UnsafeMutableRawPointer
    /// Bytes of pixels (`stride * height`).
    public let length: Int
    /// An fd of this buffer went to a consumer (vgpuctl export/dump, GET_SHARED_OBJECT): it is
    /// never reused for another resource.
    let handedOut = Atomic<Bool>(false)

    /// The buffer's fd. Owned by `buffer`: `dup` it (or `buffer.exportFD()`) to hand it out.
    public var fd: Int32 { buffer.fd }

    /// A zero-filled memfd of `length` bytes rounded up to whole pages (so a udmabuf can be
    /// made over it), named `name` (shown in /proc/PID/fd).
    public convenience init(length: Int, name: String) throws(HostBufferError) {
        guard length > 0 else { throw HostBufferError("host copy of \(length) bytes") }
        let (rounded, overflow) = length.addingReportingOverflow(pageSize - 1)
        guard !overflow else { throw HostBufferError("host copy of \(length) bytes") }
        try self.init(buffer: try HostBuffer.memfd(size: rounded / pageSize * pageSize, name: name), length: length)
    }

    /// Pixels kept in `buffer` (mapped, at least `length` bytes).
    public init(buffer: HostBuffer, length: Int) throws(HostBufferError) {
        guard let base = buffer.base, buffer.size >= length else {
            throw HostBufferError("\(buffer.kind.rawValue) buffer of \(buffer.size) bytes cannot hold \(length)")
        }
        self.buffer = buffer
        self.base = base
        self.length = length
    }
}

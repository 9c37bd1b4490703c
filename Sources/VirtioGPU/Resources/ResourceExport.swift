import HostBuffers
import VirtioCore

/// What a resource's host buffer is, as `vgpuctl list/show` and `export` report it.
///
/// Coherency rule (docs/control-protocol.md): a `zeroCopy` buffer is the guest's own pages, so a
/// consumer sees every guest write at once, with no command; an `onTransfer` buffer is (or
/// shares pages with) the backend's host copy, which changes only when TRANSFER_TO_HOST_2D lands.
public struct HostBufferInfo: Equatable, Sendable {
    /// `onFlush`: a virgl resource's readback shadow, refreshed at export and every RESOURCE_FLUSH.
    public enum Coherency: String, Sendable { case zeroCopy = "zero-copy", onTransfer = "on-transfer", onFlush = "on-flush" }
    /// Whose pages the consumer maps: the guest's, the backend's host copy, or (virgl with a
    /// render node) the GL texture itself.
    public enum Source: String, Sendable { case guestRAM = "guest-ram", hostCopy = "host-copy", texture = "gl-texture" }

    public let kind: HostBufferKind
    /// Bytes of the buffer (page multiple for dmabufs).
    public let size: Int
    public let coherency: Coherency
    public let source: Source
    /// True once RESOURCE_ASSIGN_UUID chose this buffer for export; before that the host copy
    /// is reported.
    public let exported: Bool
    /// Why the resource is not zero-copy although zero copy is on (unaligned backing, ...).
    public let shadowReason: String?
    /// The buffer's own layout when it is not the resource's linear `width * 4` rows from offset
    /// 0 in its 2D format (a GL texture's stride, fourcc and modifier); nil otherwise.
    public let layout: DMABufLayout?

    public init(kind: HostBufferKind, size: Int, coherency: Coherency, source: Source, exported: Bool, shadowReason: String? = nil,
                layout: DMABufLayout? = nil) {
        self.layout = layout
        self.kind = kind
        self.size = size
        self.coherency = coherency
        self.source = source
        self.exported = exported
        self.shadowReason = shadowReason
    }

    public var handleType: String { kind.isDMABuf ? "dmabuf" : "memfd" }
}

/// How the pixels lie in a dmabuf: what DMABUF_SCANOUT2 and `vgpuctl export` pass on.
public struct DMABufLayout: Equatable, Sendable {
    public let stride: UInt32
    public let offset: UInt32
    /// DRM fourcc.
    public let fourcc: UInt32
    /// DRM format modifier (0: linear).
    public let modifier: UInt64
    /// VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP as QEMU passes it to its GL display: false for buffers
    /// whose rows run top down in memory (QEMU's own udmabuf scanouts say false), virglrenderer's
    /// flag for GL textures.
    public let yZeroTop: Bool

    public init(stride: UInt32, offset: UInt32 = 0, fourcc: UInt32, modifier: UInt64 = 0, yZeroTop: Bool = false) {
        self.stride = stride
        self.offset = offset
        self.fourcc = fourcc
        self.modifier = modifier
        self.yZeroTop = yZeroTop
    }
}

/// A resource's dmabuf as the display is given it.
public struct ScanoutDMABuffer: Sendable {
    public let buffer: HostBuffer
    public let layout: DMABufLayout
    public init(buffer: HostBuffer, layout: DMABufLayout) {
        self.buffer = buffer
        self.layout = layout
    }
}

/// The buffer an exported resource hands out, and what it is.
struct ResourceExport {
    let buffer: HostBuffer
    let info: HostBufferInfo
}

/// Which guest pages a zero-copy udmabuf is made of: the backing's entries, in order, as pages of
/// the guest RAM memfds, merged where they are contiguous in one file.
enum ZeroCopyPlan {
    /// The page ranges holding the first `needed` bytes of `backing`, or why there are none.
    /// Every range must be whole pages of a memfd region; only the last may be rounded up to its
    /// page end (still inside guest RAM).
    static func guestPages(_ backing: BackingStore, memory: GuestMemory, needed: UInt64) throws(HostBufferError) -> [MemfdPages] {
        let page = UInt64(pageSize)
        var remaining = needed          // bytes of the buffer not yet covered
        var pages: [MemfdPages] = []
        for (i, entry) in backing.entries.enumerated() {
            guard remaining > 0 else { break }
            let region: GuestMemoryRegion, offset: UInt64
            do { (region, offset) = try memory.locate(entry.address, length: Int(entry.length)) } catch {
                throw HostBufferError("backing entry \(i) is not inside one guest RAM region")
            }
            guard region.fileDescriptor >= 0 else { throw HostBufferError("guest RAM has no file to make a udmabuf over") }
            let fileOffset = region.fileOffset + offset
            guard fileOffset % page == 0 else {
                throw HostBufferError("backing entry \(i) starts \(fileOffset % page) bytes into a page")
            }
            let take = min(UInt64(entry.length), remaining)
            var length = take
            if take % page != 0 {
                // Only the range that completes the buffer may stop inside a page: the rest of
                // that page is guest RAM too (regions are whole pages), so it is rounded up.
                guard take == remaining else { throw HostBufferError("backing entry \(i) is \(entry.length) bytes, not whole pages") }
                length = (take + page - 1) / page * page
                guard offset + length <= region.size else { throw HostBufferError("backing entry \(i) ends inside the last page of guest RAM") }
            }
            if let last = pages.last, last.fd == region.fileDescriptor, last.offset + last.length == fileOffset {
                pages[pages.count - 1] = MemfdPages(fd: last.fd, offset: last.offset, length: last.length + length)
            } else {
                pages.append(MemfdPages(fd: region.fileDescriptor, offset: fileOffset, length: length))
            }
            remaining -= take
        }
        guard remaining == 0 else {
            throw HostBufferError("backing holds \(backing.totalLength) bytes, the resource needs \(needed)")
        }
        return pages
    }
}

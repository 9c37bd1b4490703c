// What the device shows things on: the `DisplaySink` protocol that scanouts, updates and the
// cursor go to, the value types it speaks in (PixelRect, DisplayMode, DisplayDMABuf, the dmabuf
// update result), and `NullDisplay`. The sinks: VhostUserGPUDisplay (QEMU's display socket) and
// MailboxDisplay (a mailbox in front of it).

import SystemPackage

/// A rectangle in scanout or resource pixel coordinates.
public struct PixelRect: Equatable, Sendable, CustomStringConvertible {
    public var x: UInt32, y: UInt32, width: UInt32, height: UInt32
    public init(x: UInt32, y: UInt32, width: UInt32, height: UInt32) {
        self.x = x; self.y = y; self.width = width; self.height = height
    }
    public var description: String { "\(width)x\(height)+\(x)+\(y)" }
}

/// One head as the display reports it (virtio_gpu_display_one).
public struct DisplayMode: Equatable, Sendable {
    public var rect: PixelRect
    public var enabled: Bool
    public var flags: UInt32
    public init(rect: PixelRect, enabled: Bool, flags: UInt32 = 0) {
        self.rect = rect; self.enabled = enabled; self.flags = flags
    }
}

/// A buffer that QEMU's display imports by file descriptor (DMABUF_SCANOUT): a dmabuf, or on
/// hosts without a dmabuf exporter any mappable fd with the same layout (tests use a memfd).
/// One plane; 32-bit formats (what virtio-gpu scans out).
public struct DisplayDMABuf: Sendable, Equatable {
    /// Flags QEMU reads from `fd_flags`.
    public struct Flags: OptionSet, Sendable, Hashable {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP` (bit 0): row 0 is the top row (GL textures are
        /// bottom-up without it). The only flag QEMU 10 looks at.
        public static let yZeroTop = Flags(rawValue: 1 << 0)
    }

    /// `DRM_FORMAT_MOD_LINEAR`: the only modifier plain DMABUF_SCANOUT can express.
    public static let linearModifier: UInt64 = 0

    /// Borrowed: the sink never closes it and does not keep it past the call; what QEMU gets is
    /// a duplicate made by SCM_RIGHTS, which it keeps until the next scanout change.
    public var fd: FileDescriptor
    /// The whole buffer's size in pixels (`fd_width`, `fd_height`).
    public var width: UInt32
    public var height: UInt32
    /// Bytes between rows (`fd_stride`).
    public var stride: UInt32
    /// DRM fourcc (`DRM_FORMAT_XRGB8888` = 'XR24' = 0x34325258, ...).
    public var fourcc: UInt32
    /// DRM format modifier; anything but `linearModifier` needs protocol feature DMABUF2.
    public var modifier: UInt64
    public var flags: Flags

    public init(fd: FileDescriptor, width: UInt32, height: UInt32, stride: UInt32, fourcc: UInt32,
                modifier: UInt64 = DisplayDMABuf.linearModifier, flags: Flags = []) {
        self.fd = fd; self.width = width; self.height = height; self.stride = stride
        self.fourcc = fourcc; self.modifier = modifier; self.flags = flags
    }
}

/// How a `DisplaySink.updateDMABuf(_:rect:)` ended.
public enum DMABufUpdateResult: Sendable, Equatable, CustomStringConvertible {
    /// QEMU answered: it is done with the buffer's contents, which may be written again. QEMU
    /// also answers at once when it cannot show the buffer (no GL on the console, a bad scanout
    /// id), so this does not prove the frame was displayed.
    case flushed
    /// No answer within the sink's bound (QEMU stalled or its GL display is blocked). The channel
    /// stays usable; the late answer is read and dropped.
    case timedOut
    /// Nothing to wait for, or no way to wait; see the reason.
    case failed(DMABufUpdateFailure)

    public var description: String {
        switch self {
        case .flushed: "flushed"
        case .timedOut: "timed out"
        case .failed(let reason): "failed: \(reason)"
        }
    }
}

/// Why a dmabuf update could not be waited for.
public enum DMABufUpdateFailure: Sendable, Equatable, CustomStringConvertible {
    /// The sink cannot show dmabufs (the default for sinks without a dmabuf path).
    case unsupported
    /// No dmabuf is scanned out on that scanout (or the id is out of range).
    case noScanout
    /// The wait was cut short by `interrupt()`, or the request was dropped while interrupted.
    case interrupted
    /// The channel is broken or closed (QEMU went away, the stream is out of sync).
    case disconnected

    public var description: String {
        switch self {
        case .unsupported: "the display cannot take dmabufs"
        case .noScanout: "no dmabuf scanout on that scanout"
        case .interrupted: "interrupted"
        case .disconnected: "display channel broken or closed"
        }
    }
}

/// Where the device's scanouts and cursor go: QEMU's display over the vhost-user-gpu socket
/// (`VhostUserGPUDisplay`), nothing (`NullDisplay`), or a recorder in tests.
///
/// Called from queue worker threads. Implementations must never block indefinitely: a display
/// peer that stops reading must not wedge the device (see `interrupt()`).
public protocol DisplaySink: AnyObject, Sendable {
    /// The display's view of its heads (GET_DISPLAY_INFO), or nil if it cannot say.
    func displayInfo() -> [DisplayMode]?
    /// The display's EDID blob for a head, or nil if it has none (the device then makes one).
    func edid(scanout: UInt32) -> [UInt8]?
    /// Scanout `id` now shows a `width`×`height` surface; 0×0 disables it.
    func setScanout(_ id: UInt32, width: UInt32, height: UInt32)
    /// Pixels for `rect` of scanout `id`, as XRGB8888 (bytes B,G,R,X). `pixels` points at the
    /// rect's first pixel; rows are `stride` bytes apart. The sink must not keep the pointer.
    func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int)
    /// A new 64×64 XRGB/ARGB cursor image (`pixels`, 64*64*4 bytes) with its hot spot, at (x, y).
    func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: UnsafeRawPointer)
    func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32)
    func cursorHide(scanout id: UInt32)
    /// Scanout `id` now shows `rect` of `buffer` (the display imports the buffer, no copies);
    /// nil disables the dmabuf scanout. False when the sink cannot take dmabufs, the buffer
    /// cannot be expressed (a modifier without DMABUF2, a rect outside the buffer), or the message
    /// was not sent. Not on a per-frame path: it may wait (bounded) for the feature exchange.
    func scanoutDMABuf(_ id: UInt32, rect: PixelRect, buffer: DisplayDMABuf?) -> Bool
    /// `rect` of scanout `id`'s dmabuf changed: waits (bounded, interruptible) until the display
    /// is done reading the buffer, so the caller may write it again. No pixels travel.
    func updateDMABuf(_ id: UInt32, rect: PixelRect) -> DMABufUpdateResult
}

extension DisplaySink {
    /// Sinks without a dmabuf path take none.
    public func scanoutDMABuf(_ id: UInt32, rect: PixelRect, buffer: DisplayDMABuf?) -> Bool { false }
    public func updateDMABuf(_ id: UInt32, rect: PixelRect) -> DMABufUpdateResult { .failed(.unsupported) }
}

/// A display that shows nothing: used before QEMU hands over the display socket.
public final class NullDisplay: DisplaySink {
    public init() {}
    public func displayInfo() -> [DisplayMode]? { nil }
    public func edid(scanout: UInt32) -> [UInt8]? { nil }
    public func setScanout(_ id: UInt32, width: UInt32, height: UInt32) {}
    public func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int) {}
    public func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: UnsafeRawPointer) {}
    public func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32) {}
    public func cursorHide(scanout id: UInt32) {}
}

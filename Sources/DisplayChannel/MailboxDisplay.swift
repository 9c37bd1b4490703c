// A display path that works like a mailbox: the caller's pixel updates are copied into the head's
// newest image and the call returns; one sender thread forwards that image to the real display
// (QEMU's socket) as fast as the display takes it, skipping images that a newer one replaced.
//
// Why: a RESOURCE_FLUSH used to return only once its pixels had crossed the display socket and
// QEMU's main loop had taken them in. The guest's page flip waits for that response, so the
// flip rate was the socket's frame rate. With the mailbox the flush costs one row memcpy.
//
// What the display may observe (and why that is correct):
// - Every image it gets is the head's image as it was at the end of one `update` call: the
//   sender reads only a buffer no `update` writes while it is sent (double buffering), so a
//   frame is never torn, whatever the caller writes into its own pixels afterwards.
// - It may not get every image: between two sends only the newest survives (rects of the
//   skipped ones are merged into the one sent, and their pixels are the newest).
// - The last image is always sent: an update leaves work that only a send clears, and the
//   sender runs until no work is left (or `close()`).
// - Per head, order is kept: a SCANOUT is sent before any image given after it, and images given
//   before a SCANOUT are dropped (they belong to the surface it replaces).
// - dmabuf messages wait until the head's mailbox is empty, so they never overtake pixels.
//
// Deferred updates (`update(scanout:rect:source:)`): the caller names where the pixels are (a
// `MailboxPixelSource`, the resource's host copy) instead of copying them, and the sender pulls
// them into the head's image when it is about to send it. A flood of flushes then costs no copy
// per flush, only one per image actually sent. What the display may observe then: for each
// flushed rect, the source as it was at the flush: whoever changes the source (a transfer into
// the resource) calls `pullDeferred` first, so the pull happens before the change, and the
// source copies under the lock its writers hold (never torn). A pending rect is exactly one
// flushed rect (a new one that neither contains nor is contained in it pulls the old one first),
// so source pixels outside what was flushed never show. So everything above still holds; only
// the copy moves from the flush to the send, or to the next write of the source. `pullDeferred`
// can first wait (bounded) for the sender to take the image itself: the caller is then paced
// by the display instead of copying images a newer one will replace.

import CShims
import Dispatch
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// Where a deferred update's pixels are: the sender asks for them when it sends the image.
public protocol MailboxPixelSource: AnyObject, Sendable {
    /// Copies `rect` (head coordinates) as XRGB8888 to `destination`, which points at the rect's
    /// first pixel, rows `pitch` bytes apart. False when the pixels are gone (nothing written).
    /// Called on the sender thread (or in `update`), with the mailbox's lock held: it must not
    /// call back into the mailbox.
    func copy(_ rect: PixelRect, to destination: UnsafeMutableRawPointer, pitch: Int) -> Bool
}

/// A `DisplaySink` in front of another sink (the vhost-user display channel) that makes
/// `update` a copy into a mailbox: see the notes at the top of this file. Requests and replies
/// (display info, EDID) and the cursor go straight through.
public final class MailboxDisplay: DisplaySink {
    /// Heads kept here; ids beyond go straight to the inner sink (which refuses them).
    public static let maxHeads = VhostUserGPUDisplay.maxScanouts

    public let inner: any DisplaySink
    private let state: Mutex<State>
    /// Signalled whenever work is left for the sender, and on `close()`.
    private let work = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    /// Signalled by the sender after it pulled deferred pixels, when `State.pullWaiter` is set.
    private let pulled = DispatchSemaphore(value: 0)

    /// A head's pixel buffer: `capacity` bytes, rows `width * 4` apart.
    private struct Buffer {
        var base: UnsafeMutableRawPointer?
        var capacity = 0

        mutating func reserve(_ bytes: Int) -> Bool {
            if capacity >= bytes { return true }
            // Allocation only when the head grows (a mode change), never per frame.
            base?.deallocate()
            base = nil
            capacity = 0
            guard bytes > 0 else { return true }
            base = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
            capacity = bytes
            return true
        }

        mutating func release() {
            base?.deallocate()
            base = nil
            capacity = 0
        }
    }

    private struct Head {
        /// The surface as the caller last set it (0x0: disabled).
        var width: UInt32 = 0
        var height: UInt32 = 0
        /// A SCANOUT with `width`x`height` is owed to the inner sink, before any image.
        var scanoutOwed = false
        /// Written by `update` (never while the sender reads it).
        var back = Buffer()
        /// Read by the sender; holds the last image handed to it.
        var front = Buffer()
        /// Region of `back` to send (the union of the rects updated since the last send).
        var dirty: PixelRect?
        /// Region in which `back` lags `front` (what the last image sent changed): copied from
        /// `front` before `back` is written, unless the write covers it.
        var stale: PixelRect?
        /// The sender is reading `front`.
        var sending = false
        /// Deferred update: the region of `dirty` still to be pulled from `source` into `back`.
        var pending: PixelRect?
        var source: (any MailboxPixelSource)?

        var hasWork: Bool { scanoutOwed || dirty != nil }

        /// The head has a surface and `rect` lies within it.
        func holds(_ rect: PixelRect) -> Bool {
            width > 0 && height > 0 && UInt64(rect.x) + UInt64(rect.width) <= UInt64(width)
                && UInt64(rect.y) + UInt64(rect.height) <= UInt64(height)
        }

        /// `rect` is part of the next image.
        mutating func markDirty(_ rect: PixelRect) { dirty = dirty.map { $0.union(rect) } ?? rect }
    }

    // @unchecked: the buffers' raw pointers are only touched under the Mutex, or (front, while
    // `sending`) read by the sender alone.
    private struct State: @unchecked Sendable {
        var heads = [Head](repeating: Head(), count: MailboxDisplay.maxHeads)
        var next = 0
        var closing = false
        var imagesIn: UInt64 = 0
        var imagesSent: UInt64 = 0
        /// A `pullDeferred` caller waits for the sender to pull (one waiter: the device's worker).
        var pullWaiter = false
    }

    private enum Job {
        case scanout(UInt32, UInt32, UInt32)
        case image(UInt32, PixelRect, UnsafeRawPointer, Int)
    }

    /// Starts the sender thread. `close()` stops it.
    public init(inner: any DisplaySink) {
        self.inner = inner
        self.state = Mutex(State())
        // The sender holds the mailbox until `close()`.
        do throws(Errno) {
            try startDetachedThread(name: "vgpu-display") { [self] in run() }
        } catch {
            // No thread: nothing could be sent later, so nothing is accepted.
            state.withLock { $0.closing = true }
            finished.signal()
        }
    }

    deinit {
        close()
        state.withLock { s in
            for i in s.heads.indices {
                s.heads[i].back.release()
                s.heads[i].front.release()
            }
        }
    }

    /// Stops the sender after its current send (the inner sink's own bounds apply; interrupt or
    /// close the inner sink first to cut it short). Images still in the mailbox are dropped:
    /// the caller closes the mailbox when the display itself goes away.
    public func close() {
        let first = state.withLock { s -> Bool in
            defer { s.closing = true }
            return !s.closing
        }
        guard first else { return }
        work.signal()
        finished.wait()
    }

    /// Images given to `update` and images the sender handed to the inner sink (fewer when
    /// newer images replaced older ones before they were sent).
    public var counts: (received: UInt64, sent: UInt64) {
        state.withLock { ($0.imagesIn, $0.imagesSent) }
    }

    /// Waits until nothing is left to send for head `id` (every head if nil), at most `timeout`.
    /// True when empty.
    @discardableResult
    public func waitUntilSent(_ id: UInt32? = nil, timeout: Duration = .seconds(10)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            let busy = state.withLock { s -> Bool in
                if s.closing { return false }
                if let id {
                    guard Int(id) < s.heads.count else { return false }
                    return s.heads[Int(id)].hasWork || s.heads[Int(id)].sending
                }
                return s.heads.contains { $0.hasWork || $0.sending }
            }
            if !busy { return true }
            if ContinuousClock.now >= deadline { return false }
            usleep(100)
        }
    }

    // MARK: DisplaySink

    public func displayInfo() -> [DisplayMode]? { inner.displayInfo() }
    public func edid(scanout: UInt32) -> [UInt8]? { inner.edid(scanout: scanout) }

    /// Records the surface; the SCANOUT goes out before the next image. Images not sent yet are
    /// dropped: they were for the surface this one replaces.
    public func setScanout(_ id: UInt32, width: UInt32, height: UInt32) {
        guard Int(id) < Self.maxHeads else { return inner.setScanout(id, width: width, height: height) }
        let queued = state.withLock { s -> Bool in
            guard !s.closing else { return false }
            var h = s.heads[Int(id)]
            let enable = width != 0 && height != 0
            if h.width != width || h.height != height || !enable {
                // Another layout: neither buffer says anything about the new surface.
                h.stale = nil
            }
            h.width = enable ? width : 0
            h.height = enable ? height : 0
            h.scanoutOwed = true
            h.dirty = nil
            h.pending = nil
            h.source = nil
            s.heads[Int(id)] = h
            return true
        }
        if queued { work.signal() }
    }

    /// Copies `rect` into the head's newest image (row memcpys) and returns; the sender shows it.
    /// Dropped when the head has no surface or the rect does not lie within it.
    public func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int) {
        guard Int(id) < Self.maxHeads else { return inner.update(scanout: id, rect: rect, pixels: pixels, stride: stride) }
        guard rect.width > 0, rect.height > 0, stride >= Int(rect.width) * 4 else { return }
        let queued = state.withLock { s -> Bool in
            guard !s.closing else { return false }
            let i = Int(id)
            guard s.heads[i].holds(rect) else { return false }
            let w = s.heads[i].width
            // Older deferred pixels go in first: these are newer.
            Self.pullPending(&s.heads[i])
            guard let back = Self.prepareBack(&s.heads[i], writing: rect) else { return false }
            // Safety: `rect` lies within the surface, and the caller guarantees `rect.height`
            // rows of `rect.width * 4` bytes at `pixels`, `stride` apart.
            Self.copy(rect, from: pixels, stride: stride, to: back, pitch: Int(w) * 4)
            s.heads[i].markDirty(rect)
            s.imagesIn &+= 1
            return true
        }
        if queued { work.signal() }
    }

    /// A deferred update: `rect` of the head will show `source`'s pixels as they are when the
    /// sender takes the image (see the notes at the top of this file). Nothing is copied now.
    /// Dropped when the head has no surface or the rect does not lie within it.
    public func update(scanout id: UInt32, rect: PixelRect, source: any MailboxPixelSource) {
        guard Int(id) < Self.maxHeads, rect.width > 0, rect.height > 0 else { return }
        let queued = state.withLock { s -> Bool in
            guard !s.closing else { return false }
            let i = Int(id)
            guard s.heads[i].holds(rect) else { return false }
            // `pending` stays exactly one flushed rect, so a pull never shows source pixels
            // outside what was flushed: an older pending rect the new one does not cover (or
            // of another source) is pulled now.
            if let old = s.heads[i].pending {
                if s.heads[i].source === source && old.contains(rect) {
                    s.heads[i].markDirty(rect)
                    s.imagesIn &+= 1
                    return true
                }
                if s.heads[i].source !== source || !rect.contains(old) { Self.pullPending(&s.heads[i]) }
            }
            s.heads[i].source = source
            s.heads[i].pending = rect
            s.heads[i].markDirty(rect)
            s.imagesIn &+= 1
            return true
        }
        if queued { work.signal() }
    }

    /// Makes sure head `id`'s deferred pixels are out of their source (before the caller
    /// changes the source: a transfer into the resource shown), so the image keeps the pixels
    /// of its flush. First waits, at most `wait`, for the sender to take them with the image
    /// it sends next (the pull it does anyway: no copy here, and a guest that floods one buffer
    /// is paced by the display instead of paying copies for images nobody sees); past that, or
    /// with no wait, copies them into the image here.
    public func pullDeferred(scanout id: UInt32, wait: Duration = .zero) {
        guard Int(id) < Self.maxHeads else { return }
        let i = Int(id)
        if wait > .zero {
            let waiting = state.withLock { s -> Bool in
                guard !s.closing, s.heads[i].pending != nil, !s.pullWaiter else { return false }
                s.pullWaiter = true
                return true
            }
            if waiting {
                let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18
                let signalled = pulled.wait(timeout: .now() + seconds) == .success
                let owed = state.withLock { s -> Bool in
                    defer { s.pullWaiter = false }
                    return !signalled && !s.pullWaiter   // the sender signalled after the timeout
                }
                if owed { pulled.wait() }
            }
        }
        state.withLock { s in
            guard !s.closing, s.heads[i].pending != nil else { return }
            Self.pullPending(&s.heads[i])
        }
    }

    /// `back`, sized for the head, brought up to date where it lags `front` (except inside
    /// `rect`, which the caller is about to write). Nil when it cannot be had.
    private static func prepareBack(_ head: inout Head, writing rect: PixelRect) -> UnsafeMutableRawPointer? {
        let pitch = Int(head.width) * 4
        guard head.back.reserve(pitch * Int(head.height)), let back = head.back.base else { return nil }
        if let lag = head.stale {
            if !rect.contains(lag), let front = head.front.base {
                // Safety: `lag` lies within the surface (it was a sent rect of the same
                // layout); the sender only reads `front`, so reading it here is safe.
                copy(lag, from: UnsafeRawPointer(front + Int(lag.y) * pitch + Int(lag.x) * 4), stride: pitch,
                     to: back, pitch: pitch)
            }
            head.stale = nil
        }
        return back
    }

    /// Pulls the head's deferred region from its source into `back` (mailbox lock held).
    private static func pullPending(_ head: inout Head) {
        guard let rect = head.pending, let source = head.source else { return }
        head.pending = nil
        guard let back = prepareBack(&head, writing: rect) else { return }
        let pitch = Int(head.width) * 4
        // Safety: `rect` lies within the surface (checked when it was given); `back` holds it.
        _ = source.copy(rect, to: back + Int(rect.y) * pitch + Int(rect.x) * 4, pitch: pitch)
    }

    public func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: UnsafeRawPointer) {
        inner.cursorUpdate(scanout: id, x: x, y: y, hotX: hotX, hotY: hotY, pixels: pixels)
    }
    public func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32) { inner.cursorMove(scanout: id, x: x, y: y) }
    public func cursorHide(scanout id: UInt32) { inner.cursorHide(scanout: id) }

    /// After the head's pixels in the mailbox are sent (bounded), so a dmabuf never overtakes them.
    public func scanoutDMABuf(_ id: UInt32, rect: PixelRect, buffer: DisplayDMABuf?) -> Bool {
        waitUntilSent(id)
        return inner.scanoutDMABuf(id, rect: rect, buffer: buffer)
    }

    public func updateDMABuf(_ id: UInt32, rect: PixelRect) -> DMABufUpdateResult {
        waitUntilSent(id)
        return inner.updateDMABuf(id, rect: rect)
    }

    // MARK: sender

    private func run() {
        defer { finished.signal() }
        while true {
            work.wait()
            while let job = takeJob() {
                switch job {
                case let .scanout(id, w, h):
                    inner.setScanout(id, width: w, height: h)
                case let .image(id, rect, pixels, stride):
                    inner.update(scanout: id, rect: rect, pixels: pixels, stride: stride)
                    state.withLock { s in
                        s.heads[Int(id)].sending = false
                        s.imagesSent &+= 1
                    }
                }
            }
            if state.withLock({ $0.closing }) { return }
        }
    }

    /// The next thing to send, heads taken in turn; nil when nothing is left or closing. An
    /// image swaps the head's buffers: the sender reads the old `back`, `update` writes the other.
    private func takeJob() -> Job? {
        state.withLock { s -> Job? in
            guard !s.closing else { return nil }
            let n = s.heads.count
            for k in 0..<n {
                let i = (s.next + k) % n
                guard s.heads[i].hasWork else { continue }
                s.next = (i + 1) % n
                if s.heads[i].scanoutOwed {
                    s.heads[i].scanoutOwed = false
                    return .scanout(UInt32(i), s.heads[i].width, s.heads[i].height)
                }
                guard let rect = s.heads[i].dirty else { continue }
                if let p = s.heads[i].pending, p == rect, let source = s.heads[i].source {
                    // The whole image is the source's: pull it straight into `front`, which holds
                    // what the display shows, instead of into `back` and swapping. One 8 MB
                    // buffer less to stream through the caches per frame; `back` now lags
                    // `front` in `rect` too.
                    var h = s.heads[i]
                    let pitch = Int(h.width) * 4
                    if h.front.reserve(pitch * Int(h.height)), let front = h.front.base {
                        // Safety: `rect` lies within the surface (checked when given); `front` is
                        // not being sent (the sender is here) and holds the surface.
                        _ = source.copy(rect, to: front + Int(rect.y) * pitch + Int(rect.x) * 4, pitch: pitch)
                        h.pending = nil
                        h.dirty = nil
                        h.stale = h.stale.map { $0.union(rect) } ?? rect
                        h.sending = true
                        s.heads[i] = h
                        if s.pullWaiter {
                            s.pullWaiter = false
                            pulled.signal()
                        }
                        return .image(UInt32(i), rect, UnsafeRawPointer(front + Int(rect.y) * pitch + Int(rect.x) * 4), pitch)
                    }
                }
                if s.heads[i].pending != nil {
                    Self.pullPending(&s.heads[i])
                    if s.pullWaiter {
                        s.pullWaiter = false
                        pulled.signal()
                    }
                }
                var h = s.heads[i]
                swap(&h.back, &h.front)
                h.dirty = nil
                h.stale = rect
                h.sending = true
                s.heads[i] = h
                let pitch = Int(h.width) * 4
                // Safety: `rect` lies within the surface the buffer was written for; `front` is
                // not written while `sending` is set.
                let first = UnsafeRawPointer(h.front.base! + Int(rect.y) * pitch + Int(rect.x) * 4)
                return .image(UInt32(i), rect, first, pitch)
            }
            return nil
        }
    }

    /// Copies `rect.height` rows of `rect.width * 4` bytes from `source` (rows `stride` apart)
    /// to `rect`'s place in `destination` (rows `pitch` apart): one memcpy when both are packed.
    private static func copy(_ rect: PixelRect, from source: UnsafeRawPointer, stride: Int,
                             to destination: UnsafeMutableRawPointer, pitch: Int) {
        let rowBytes = Int(rect.width) * 4
        let rows = Int(rect.height)
        let target = destination + Int(rect.y) * pitch + Int(rect.x) * 4
        if stride == rowBytes && pitch == rowBytes {
            target.copyMemory(from: source, byteCount: rowBytes * rows)
            return
        }
        for row in 0..<rows {
            (target + row * pitch).copyMemory(from: source + row * stride, byteCount: rowBytes)
        }
    }
}

extension PixelRect {
    /// The smallest rect holding both.
    func union(_ other: PixelRect) -> PixelRect {
        let x0 = min(x, other.x), y0 = min(y, other.y)
        let x1 = max(UInt64(x) + UInt64(width), UInt64(other.x) + UInt64(other.width))
        let y1 = max(UInt64(y) + UInt64(height), UInt64(other.y) + UInt64(other.height))
        return PixelRect(x: x0, y: y0, width: UInt32(x1 - UInt64(x0)), height: UInt32(y1 - UInt64(y0)))
    }

    /// True when `other` lies inside this rect.
    func contains(_ other: PixelRect) -> Bool {
        other.x >= x && other.y >= y
            && UInt64(other.x) + UInt64(other.width) <= UInt64(x) + UInt64(width)
            && UInt64(other.y) + UInt64(other.height) <= UInt64(y) + UInt64(height)
    }
}

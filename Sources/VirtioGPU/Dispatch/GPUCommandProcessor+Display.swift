import DisplayChannel
import SystemPackage

extension GPUCommandProcessor {
    /// Shows every enabled head again on the current display: its dmabuf (DMABUF_SCANOUT +
    /// DMABUF_UPDATE) or a SCANOUT and a full UPDATE.
    ///
    /// QEMU drops its display surfaces whenever it stops the device (VM pause, migration) and
    /// hands over a new display socket when it starts it again, while the guest, which saw no
    /// reset, keeps its scanouts and only flushes what changes. Without this the screen would
    /// stay blank until the guest redraws everything.
    public func refreshDisplay() {
        let display = self.display
        scanouts.withLock { t in
            for i in 0..<t.count {
                let s = t[i]
                guard let id = s.resource else { continue }
                if s.viaDMABUF, showViaDMABUF(i, resource: id, rect: s.rect, display: display) { continue }
                t[i].viaDMABUF = false
                t[i].wholeFrameOwed = false
                try? showWithPixels(i, &t, display: display)
            }
        }
    }

    /// The control queue has no more requests: heads that SET_SCANOUT announced and no flush
    /// followed get their whole frame now, so a head never shows stale content (or a blank
    /// surface) because the guest did not flush. The usual guest (SET_SCANOUT and RESOURCE_FLUSH
    /// in one batch) has nothing owed by then. Runs on the control worker, like transfers, so
    /// the frame is not read while a transfer writes it.
    public func controlQueueIdle() {
        let display = self.display
        scanouts.withLock { t in
            for i in 0..<t.count where t[i].wholeFrameOwed {
                t[i].wholeFrameOwed = false
                let s = t[i]
                guard s.resource != nil, !s.viaDMABUF else { continue }
                do { try sendWholeFrame(i, &t, display: display) } catch {
                    logger.debug("scanout \(i): owed frame not sent: \(error)")
                }
            }
        }
    }

    /// SCANOUT with the head's size and one full UPDATE from the host copy.
    func showWithPixels(_ index: Int, _ t: inout ScanoutTable, display: any DisplaySink) throws(GPUFailure) {
        let s = t[index]
        guard s.resource != nil else { return }
        display.setScanout(UInt32(index), width: s.rect.width, height: s.rect.height)
        try sendWholeFrame(index, &t, display: display)
    }

    /// One UPDATE of the whole head from the host copy (no SCANOUT).
    func sendWholeFrame(_ index: Int, _ t: inout ScanoutTable, display: any DisplaySink) throws(GPUFailure) {
        let s = t[index]
        guard s.resource != nil else { return }
        try sendPixels(index, &t, part: s.rect, display: display)
    }

    /// Sends `part` (resource pixels, within the head's rect) of the resource head `index` shows.
    /// Through the display mailbox with a 2D host copy, the update is deferred: the mailbox's
    /// sender reads the host copy when it sends the image (one copy per image sent, none per
    /// flush; what the display may show is written in MailboxDisplay.swift). Otherwise the
    /// pixels are handed over now.
    func sendPixels(_ index: Int, _ t: inout ScanoutTable, part: PixelRect, display: any DisplaySink) throws(GPUFailure) {
        let s = t[index]
        guard let id = s.resource else { return }
        let target = PixelRect(x: part.x - s.rect.x, y: part.y - s.rect.y, width: part.width, height: part.height)
        if let mailbox = display as? MailboxDisplay, let r2 = renderer as? Renderer2D {
            guard let g = r2.geometry(of: id) else { throw .invalidResourceID("\(id) does not exist") }
            guard part.lies(within: g.width, g.height), !part.isEmpty else { throw .invalidParameter("rect \(part) outside \(id)") }
            let source: HostCopyPixelSource
            if let cached = t.pixelSources[index], cached.renderer === r2, cached.resource == id,
               cached.originX == s.rect.x, cached.originY == s.rect.y {
                source = cached
            } else {
                source = HostCopyPixelSource(renderer: r2, resource: id, originX: s.rect.x, originY: s.rect.y)
                t.pixelSources[index] = source
            }
            // An image of this head not taken yet (a guest re-flushing before the display took
            // its last frame): wait for the sender to take it, as a transfer does, so images
            // nobody will see cost neither copies nor a busy worker.
            mailbox.pullDeferred(scanout: UInt32(index), wait: Self.deferredPullWait)
            mailbox.update(scanout: UInt32(index), rect: target, source: source)
            return
        }
        try renderer.withScanoutPixels(id, rect: part) { pixels, stride in
            display.update(scanout: UInt32(index), rect: target, pixels: pixels, stride: stride)
        }
    }

    /// Before a transfer writes `id`'s host copy: heads showing it whose deferred update the
    /// mailbox has not sent yet get their pixels out of the host copy first, so they show what
    /// was flushed. The transfer waits (at most `deferredPullWait`) for the sender to take them
    /// with its next image, else they are copied here. Only a guest that transfers into the
    /// buffer it just flushed, before the display took that frame, ever waits (double-buffered
    /// page flips transfer into the other buffer); it then runs at the display's rate.
    func pullDeferredPixels(of id: ResourceID) {
        guard let mailbox = display as? MailboxDisplay else { return }
        let heads = scanouts.withLock { t -> (Int, Int) in
            // At most two heads show one resource in practice; no allocation.
            var first = -1, second = -1
            for i in 0..<t.count where t[i].resource == id && t.pixelSources[i] != nil {
                if first < 0 { first = i } else if second < 0 { second = i } else { mailbox.pullDeferred(scanout: UInt32(i)) }
            }
            return (first, second)
        }
        if heads.0 >= 0 { mailbox.pullDeferred(scanout: UInt32(heads.0), wait: Self.deferredPullWait) }
        if heads.1 >= 0 { mailbox.pullDeferred(scanout: UInt32(heads.1), wait: Self.deferredPullWait) }
    }

    /// How long a transfer waits for the display sender to take a flushed frame of its resource.
    static let deferredPullWait: Duration = .milliseconds(20)

    /// Disables head `index` on the display (its dmabuf too, if it showed one).
    func disableHead(_ index: Int, _ t: inout ScanoutTable, display: any DisplaySink) {
        if t[index].viaDMABUF { _ = display.scanoutDMABuf(UInt32(index), rect: t[index].rect, buffer: nil) }
        t[index] = .disabled
        display.setScanout(UInt32(index), width: 0, height: 0)
    }

    /// With dmabuf scanout on (and not given up), shows `rect` of the resource on head `index`
    /// from its dmabuf host buffer: DMABUF_SCANOUT(2), then a DMABUF_UPDATE of the whole head,
    /// which QEMU answers. False (nothing left shown from a dmabuf) when the resource has no
    /// dmabuf, the display refuses it, or does not answer.
    func showViaDMABUF(_ index: Int, resource id: ResourceID, rect: PixelRect, display: any DisplaySink) -> Bool {
        guard config.dmabufScanout, !dmabufScanoutGivenUp.load(ordering: .relaxed),
              let g = renderer.geometry(of: id), let scanout = renderer.scanoutDMABuffer(id)
        else { return false }
        let l = scanout.layout
        let dmabuf = DisplayDMABuf(fd: FileDescriptor(rawValue: scanout.buffer.fd), width: g.width, height: g.height, stride: l.stride,
                                   fourcc: l.fourcc, modifier: l.modifier, flags: l.yZeroTop ? [.yZeroTop] : [])
        let sent = withExtendedLifetime(scanout.buffer) { display.scanoutDMABuf(UInt32(index), rect: rect, buffer: dmabuf) }
        guard sent else { return false }
        let whole = PixelRect(x: 0, y: 0, width: rect.width, height: rect.height)
        let result = display.updateDMABuf(UInt32(index), rect: whole)
        if case .flushed = result { return true }
        _ = display.scanoutDMABuf(UInt32(index), rect: rect, buffer: nil)
        giveUpDMABUFScanout(because: result)
        return false
    }

    /// RESOURCE_FLUSH of a head shown from a dmabuf: a DMABUF_UPDATE. When the display does not
    /// answer, dmabuf scanout is given up and the head is shown whole with pixels.
    func updateViaDMABUF(_ index: Int, _ t: inout ScanoutTable, rect: PixelRect, display: any DisplaySink) {
        let result = display.updateDMABuf(UInt32(index), rect: rect)
        switch result {
        case .flushed:
            return
        case .failed(.interrupted), .failed(.disconnected):
            // The display is going away (queues stopping, QEMU closed it); the next display
            // channel gets every head again through refreshDisplay.
            return
        default:
            giveUpDMABUFScanout(because: result)
            _ = display.scanoutDMABuf(UInt32(index), rect: t[index].rect, buffer: nil)
            t[index].viaDMABUF = false
            try? showWithPixels(index, &t, display: display)
        }
    }

    private func giveUpDMABUFScanout(because result: DMABufUpdateResult) {
        if !dmabufScanoutGivenUp.exchange(true, ordering: .relaxed) {
            logger.warning("dmabuf scanout given up (DMABUF_UPDATE: \(result)); showing every head with pixel updates")
        }
    }
}

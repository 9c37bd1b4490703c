import CShims
import DisplayChannel
import VirtioCore

/// The scanout commands: GET_DISPLAY_INFO, GET_EDID, SET_SCANOUT, RESOURCE_FLUSH. What they
/// send to the display is in GPUCommandProcessor+Display.swift.
extension GPUCommandProcessor {
    /// GET_DISPLAY_INFO: the display's view when it answers (QEMU's), else the configured default.
    func displayModes() -> [DisplayMode] {
        let n = Int(numScanouts)
        if let reported = display.displayInfo() {
            var modes = Array(reported.prefix(n))
            while modes.count < n { modes.append(DisplayMode(rect: PixelRect(x: 0, y: 0, width: 0, height: 0), enabled: false)) }
            reportedModes.withLock { $0 = modes }
            return modes
        }
        reportedModes.withLock { $0 = nil }
        return (0..<n).map { i in
            i < Int(config.defaultEnabledScanouts)
                ? DisplayMode(rect: PixelRect(x: 0, y: 0, width: config.defaultWidth, height: config.defaultHeight), enabled: true)
                : DisplayMode(rect: PixelRect(x: 0, y: 0, width: 0, height: 0), enabled: false)
        }
    }

    /// GET_EDID (spec 5.7.6.8): the display's EDID if it has one, else a generated EDID 1.4 block
    /// whose preferred mode is the head's current mode.
    func getEDID(scanout: UInt32) throws(GPUFailure) -> GPUResponse {
        guard scanout < numScanouts else { throw .invalidScanoutID("scanout \(scanout) ≥ \(numScanouts)") }
        if let blob = display.edid(scanout: scanout) {
            if let body = GPUResponse.edid(blob) { return .okEDID(body) }
            logger.warning("display EDID for scanout \(scanout) has \(blob.count) bytes (1...1024 allowed); generating one")
        }
        let mode = preferredMode(scanout: Int(scanout))
        let blob = EDIDGenerator.generate(width: mode.width, height: mode.height, serial: scanout + 1)
        guard let body = GPUResponse.edid(blob) else { throw .unspec("generated EDID does not fit") }
        return .okEDID(body)
    }

    /// The mode a head is in: what the display last reported for it, else what the guest set
    /// it to, else the configured default.
    func preferredMode(scanout: Int) -> (width: UInt32, height: UInt32) {
        if let modes = reportedModes.withLock({ $0 }), scanout < modes.count {
            let m = modes[scanout]
            if m.enabled, m.rect.width > 0, m.rect.height > 0 { return (m.rect.width, m.rect.height) }
        }
        let current = scanouts.withLock { $0[scanout] }
        if current.resource != nil, !current.rect.isEmpty { return (current.rect.width, current.rect.height) }
        return (config.defaultWidth, config.defaultHeight)
    }

    /// SET_SCANOUT (spec 5.7.6.8): resource 0 disables the head; otherwise the rectangle must be
    /// non-empty and within the resource. The display gets the new size and a first full frame.
    func setScanout(_ c: virtio_gpu_set_scanout, memory: GuestMemory) throws(GPUFailure) {
        let scanoutID = c.scanout_id
        guard scanoutID < numScanouts else { throw .invalidScanoutID("scanout \(scanoutID) ≥ \(numScanouts)") }
        let index = Int(scanoutID)
        let id = ResourceID(c.resource_id)
        let display = self.display
        if id.isNone {
            scanouts.withLock { t in
                guard t[index].resource != nil else { return }   // QEMU: nothing to do, no message
                disableHead(index, &t, display: display)
            }
            return
        }
        guard let g = renderer.geometry(of: id) else { throw .invalidResourceID("\(id) does not exist") }
        let rect = PixelRect(c.r)
        guard !rect.isEmpty, rect.lies(within: g.width, g.height) else {
            throw .invalidParameter("scanout rect \(rect) empty or outside \(id) (\(g.width)x\(g.height))")
        }
        let renderer = self.renderer
        // With dmabuf scanout, a head's resource gets its host buffer now (zero copy where the
        // backing allows), whether or not the guest ever exports it.
        if config.dmabufScanout, !dmabufScanoutGivenUp.load(ordering: .relaxed) { _ = renderer.exportResource(id, memory: memory) }
        try scanouts.withLock { (t: inout ScanoutTable) throws(GPUFailure) in
            let wasDMABUF = t[index].viaDMABUF
            if showViaDMABUF(index, resource: id, rect: rect, display: display) {
                t[index] = Scanout(resource: id, rect: rect, viaDMABUF: true)
                return
            }
            if wasDMABUF { _ = display.scanoutDMABuf(scanoutID, rect: t[index].rect, buffer: nil) }
            // Only the SCANOUT now: the guest driver flushes right after SET_SCANOUT, and that
            // flush sends the whole head (see `wholeFrameOwed`); sending the frame here too
            // moved every flip's pixels twice. Without a flush, `controlQueueIdle` sends it.
            t[index] = Scanout(resource: id, rect: rect, wholeFrameOwed: true)
            display.setScanout(scanoutID, width: rect.width, height: rect.height)
        }
    }

    /// RESOURCE_FLUSH: for each head showing the resource, the part of `rect` it shows goes to
    /// the display in that head's coordinates. Hot path: no allocation.
    func flushResource(_ id: ResourceID, rect: PixelRect) throws(GPUFailure) {
        guard let g = renderer.geometry(of: id) else { throw .invalidResourceID("\(id) does not exist") }
        guard rect.lies(within: g.width, g.height) else {
            throw .invalidParameter("flush rect \(rect) outside \(id) (\(g.width)x\(g.height))")
        }
        guard !rect.isEmpty else { return }
        let display = self.display
        try scanouts.withLock { (t: inout ScanoutTable) throws(GPUFailure) in
            for i in 0..<t.count {
                let s = t[i]
                guard s.resource == id, let part = rect.intersection(s.rect) else { continue }
                let target = PixelRect(x: part.x - s.rect.x, y: part.y - s.rect.y, width: part.width, height: part.height)
                if s.viaDMABUF {
                    // A dmabuf update, or (given up) the head re-shown whole with pixels.
                    updateViaDMABUF(i, &t, rect: target, display: display)
                    continue
                }
                if s.wholeFrameOwed {
                    // First pixels since SET_SCANOUT: the whole head, whatever the rect.
                    t[i].wholeFrameOwed = false
                    try sendWholeFrame(i, &t, display: display)
                    continue
                }
                try sendPixels(i, &t, part: part, display: display)
            }
        }
    }
}

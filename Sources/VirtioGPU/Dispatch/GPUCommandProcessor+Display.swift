import DisplayChannel

extension GPUCommandProcessor {
    /// Shows every enabled head again on the current display: a SCANOUT and a full UPDATE each.
    ///
    /// QEMU drops its display surfaces whenever it stops the device (VM pause, migration) and
    /// hands over a new display socket when it starts it again, while the guest, which saw no
    /// reset, keeps its scanouts and only flushes what changes. Without this the screen would
    /// stay blank until the guest redraws everything.
    public func refreshDisplay() {
        let display = self.display
        let renderer = self.renderer
        scanouts.withLock { t in
            for i in 0..<t.count {
                let s = t[i]
                guard let id = s.resource else { continue }
                display.setScanout(UInt32(i), width: s.rect.width, height: s.rect.height)
                let whole = PixelRect(x: 0, y: 0, width: s.rect.width, height: s.rect.height)
                try? renderer.withScanoutPixels(id, rect: s.rect) { pixels, stride in
                    display.update(scanout: UInt32(i), rect: whole, pixels: pixels, stride: stride)
                }
            }
        }
    }
}

import Dispatch
import Glibc
import struct Synchronization.Atomic
import SystemSupport
import Testing

@testable import DisplayChannel

/// An inner sink that composes what it receives into per-head images, like QEMU's surface,
/// and can hold its sender thread inside `update` (a display that is slow to take a frame).
private final class ComposingSink: DisplaySink {
    struct State {
        var width: [UInt32: UInt32] = [:]
        var images: [UInt32: [UInt8]] = [:]
        var log: [String] = []
        var updates = 0
    }
    let state = Mutex(State())
    let gate = DispatchSemaphore(value: 0)
    let holding = Atomic<Bool>(false)
    let entered = DispatchSemaphore(value: 0)

    func displayInfo() -> [DisplayMode]? { nil }
    func edid(scanout: UInt32) -> [UInt8]? { nil }
    func setScanout(_ id: UInt32, width: UInt32, height: UInt32) {
        state.withLock {
            $0.width[id] = width
            $0.images[id] = [UInt8](repeating: 0, count: Int(width * height) * 4)
            $0.log.append("scanout \(id) \(width)x\(height)")
        }
    }
    func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int) {
        if holding.load(ordering: .acquiring) {
            entered.signal()
            gate.wait()
        }
        state.withLock { s in
            guard let w = s.width[id] else { return }
            for row in 0..<Int(rect.height) {
                for b in 0..<Int(rect.width) * 4 {
                    s.images[id]![((Int(rect.y) + row) * Int(w) + Int(rect.x)) * 4 + b] = pixels.load(fromByteOffset: row * stride + b, as: UInt8.self)
                }
            }
            s.updates += 1
            s.log.append("update \(id) \(rect)")
        }
    }
    func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: UnsafeRawPointer) {}
    func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32) {}
    func cursorHide(scanout id: UInt32) {}
}

private func frame(_ w: Int, _ h: Int, _ value: UInt8) -> [UInt8] { [UInt8](repeating: value, count: w * h * 4) }

/// A deferred-update source: a w x h image whose bytes all hold `value`, counting its pulls.
private final class FillSource: MailboxPixelSource {
    let value = Atomic<UInt8>(0)
    let pulls = Atomic<Int>(0)
    func copy(_ rect: PixelRect, to destination: UnsafeMutableRawPointer, pitch: Int) -> Bool {
        pulls.add(1, ordering: .relaxed)
        let v = value.load(ordering: .acquiring)
        for row in 0..<Int(rect.height) { memset(destination + row * pitch, Int32(v), Int(rect.width) * 4) }
        return true
    }
}

@Suite struct MailboxDisplayTests {
    @Test func newestFrameWinsAndTheLastIsAlwaysShown() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        defer { mailbox.close() }
        let (w, h) = (16, 8)
        let whole = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        mailbox.setScanout(0, width: UInt32(w), height: UInt32(h))
        inner.holding.store(true, ordering: .releasing)
        mailbox.update(scanout: 0, rect: whole, pixels: frame(w, h, 1), stride: w * 4)
        inner.entered.wait()                        // the display is busy with frame 1
        for v in 2...10 { mailbox.update(scanout: 0, rect: whole, pixels: frame(w, h, UInt8(v)), stride: w * 4) }
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        let s = inner.state.withLock { $0 }
        #expect(s.images[0] == frame(w, h, 10))      // the last one
        #expect(s.updates == 2)                      // 1, then only the newest of 2...10
        #expect(mailbox.counts == (received: 10, sent: 2))
    }

    @Test func deferredUpdatesArePulledOncePerImageSentAndShowTheLastSource() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        defer { mailbox.close() }
        let (w, h) = (16, 8)
        let whole = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        let source = FillSource()
        mailbox.setScanout(0, width: UInt32(w), height: UInt32(h))
        inner.holding.store(true, ordering: .releasing)
        source.value.store(1, ordering: .releasing)
        mailbox.update(scanout: 0, rect: whole, source: source)
        inner.entered.wait()                        // the display is busy with image 1
        for v in 2...10 {
            source.value.store(UInt8(v), ordering: .releasing)
            mailbox.update(scanout: 0, rect: whole, source: source)   // nothing copied here
        }
        #expect(source.pulls.load(ordering: .relaxed) == 1)
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        #expect(inner.state.withLock { $0.images[0] } == frame(w, h, 10))
        #expect(source.pulls.load(ordering: .relaxed) == 2)   // one per image sent
        #expect(mailbox.counts == (received: 10, sent: 2))
    }

    @Test func pullDeferredKeepsTheFlushedPixelsWhenTheSourceChangesLater() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        defer { mailbox.close() }
        let (w, h) = (8, 8)
        let whole = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        let source = FillSource()
        mailbox.setScanout(0, width: UInt32(w), height: UInt32(h))
        inner.holding.store(true, ordering: .releasing)
        mailbox.update(scanout: 0, rect: whole, pixels: frame(w, h, 0x01), stride: w * 4)
        inner.entered.wait()                        // the sender is busy: the next stays queued
        source.value.store(0x11, ordering: .releasing)
        mailbox.update(scanout: 0, rect: whole, source: source)
        // The source is about to change (a transfer): its flushed pixels are taken first.
        mailbox.pullDeferred(scanout: 0)
        source.value.store(0x22, ordering: .releasing)
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        #expect(inner.state.withLock { $0.images[0] } == frame(w, h, 0x11))
    }

    @Test func aCopiedUpdateAfterADeferredOneLandsOnTopAndAScanoutDropsPending() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        defer { mailbox.close() }
        let (w, h) = (8, 4)
        let whole = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        let top = PixelRect(x: 0, y: 0, width: UInt32(w), height: 2)
        let source = FillSource()
        mailbox.setScanout(0, width: UInt32(w), height: UInt32(h))
        inner.holding.store(true, ordering: .releasing)
        mailbox.update(scanout: 0, rect: whole, pixels: frame(w, h, 0x01), stride: w * 4)
        inner.entered.wait()
        source.value.store(0x33, ordering: .releasing)
        mailbox.update(scanout: 0, rect: whole, source: source)
        mailbox.update(scanout: 0, rect: top, pixels: frame(w, 2, 0x44), stride: w * 4)
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        #expect(inner.state.withLock { $0.images[0] } == frame(w, 2, 0x44) + frame(w, 2, 0x33))
        // Pending pixels of the old surface never reach the new one.
        inner.holding.store(true, ordering: .releasing)
        mailbox.update(scanout: 0, rect: whole, pixels: frame(w, h, 0x05), stride: w * 4)
        inner.entered.wait()
        let before = source.pulls.load(ordering: .relaxed)
        mailbox.update(scanout: 0, rect: whole, source: source)
        mailbox.setScanout(0, width: UInt32(w), height: UInt32(h))
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        #expect(source.pulls.load(ordering: .relaxed) == before)
        #expect(inner.state.withLock { $0.log.last } == "scanout 0 8x4")
    }

    @Test func theCallerMayWriteItsPixelsAsSoonAsUpdateReturns() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        defer { mailbox.close() }
        let (w, h) = (8, 8)
        let whole = PixelRect(x: 0, y: 0, width: UInt32(w), height: UInt32(h))
        mailbox.setScanout(0, width: UInt32(w), height: UInt32(h))
        inner.holding.store(true, ordering: .releasing)
        var pixels = frame(w, h, 0x11)
        mailbox.update(scanout: 0, rect: whole, pixels: pixels, stride: w * 4)
        inner.entered.wait()
        // The guest draws the next frame into the same buffer while the display takes the first.
        for i in pixels.indices { pixels[i] = 0x22 }
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        #expect(inner.state.withLock { $0.images[0] } == frame(w, h, 0x11))
    }

    @Test func mergedRectsCarryTheNewestPixelsAndNothingStale() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        defer { mailbox.close() }
        let (w, h) = (10, 6)
        var model = frame(w, h, 0)
        func put(_ r: PixelRect, _ v: UInt8) {
            var src = [UInt8](repeating: v, count: Int(r.width * r.height) * 4)
            src[0] = v &+ 100     // a marker on the rect's first pixel
            mailbox.update(scanout: 0, rect: r, pixels: src, stride: Int(r.width) * 4)
            for row in 0..<Int(r.height) { for col in 0..<Int(r.width) { for b in 0..<4 {
                model[((Int(r.y) + row) * w + Int(r.x) + col) * 4 + b] = src[(row * Int(r.width) + col) * 4 + b]
            } } }
        }
        mailbox.setScanout(0, width: UInt32(w), height: UInt32(h))
        put(PixelRect(x: 0, y: 0, width: 10, height: 6), 1)
        #expect(mailbox.waitUntilSent())
        inner.holding.store(true, ordering: .releasing)
        put(PixelRect(x: 1, y: 1, width: 3, height: 2), 2)
        inner.entered.wait()                         // being sent; the next ones merge
        put(PixelRect(x: 6, y: 3, width: 2, height: 2), 3)
        put(PixelRect(x: 2, y: 2, width: 5, height: 1), 4)
        put(PixelRect(x: 0, y: 5, width: 1, height: 1), 5)
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        #expect(inner.state.withLock { $0.images[0] } == model)
    }

    @Test func aScanoutGoesBeforeLaterFramesAndDropsEarlierOnes() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        defer { mailbox.close() }
        mailbox.setScanout(0, width: 4, height: 4)
        inner.holding.store(true, ordering: .releasing)
        mailbox.update(scanout: 0, rect: PixelRect(x: 0, y: 0, width: 4, height: 4), pixels: frame(4, 4, 1), stride: 16)
        inner.entered.wait()
        mailbox.update(scanout: 0, rect: PixelRect(x: 0, y: 0, width: 4, height: 4), pixels: frame(4, 4, 2), stride: 16)
        mailbox.setScanout(0, width: 2, height: 2)     // frame 2 was for the old surface
        mailbox.update(scanout: 0, rect: PixelRect(x: 0, y: 0, width: 2, height: 2), pixels: frame(2, 2, 3), stride: 8)
        mailbox.update(scanout: 0, rect: PixelRect(x: 0, y: 0, width: 4, height: 4), pixels: frame(4, 4, 4), stride: 16)  // outside: dropped
        inner.holding.store(false, ordering: .releasing)
        inner.gate.signal()
        #expect(mailbox.waitUntilSent())
        let s = inner.state.withLock { $0 }
        #expect(s.log == ["scanout 0 4x4", "update 0 4x4+0+0", "scanout 0 2x2", "update 0 2x2+0+0"])
        #expect(s.images[0] == frame(2, 2, 3))
    }

    @Test func closeStopsTheSenderAndLaterCallsAreDropped() {
        let inner = ComposingSink()
        let mailbox = MailboxDisplay(inner: inner)
        mailbox.setScanout(0, width: 2, height: 2)
        #expect(mailbox.waitUntilSent())
        mailbox.close()
        mailbox.update(scanout: 0, rect: PixelRect(x: 0, y: 0, width: 2, height: 2), pixels: frame(2, 2, 9), stride: 8)
        mailbox.close()   // twice is fine
        #expect(inner.state.withLock { $0.updates } == 0)
    }
}

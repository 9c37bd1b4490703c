import FrontendSide
import Glibc
import struct Synchronization.Atomic
import Testing

@testable import DisplayChannel
import SystemSupport
import VGPUTestSupport

/// Runs `body` on a new thread; `wait()` joins it.
final class Background: Sendable {
    private final class Flag: Sendable { let value = Atomic<Bool>(false) }
    private let done = Flag()
    private let thread: WorkerThread

    init(_ body: @escaping @Sendable () -> Void) throws {
        let done = self.done
        thread = try WorkerThread(name: "display-test") { _ in
            body()
            done.value.store(true, ordering: .releasing)
        }
    }

    var isFinished: Bool { done.value.load(ordering: .acquiring) }

    func wait() { thread.join() }

    /// The worker is still blocked after 200 ms; `cut()` (an interrupt, a peer closing) then
    /// frees it, and how long that took is returned.
    func isStuck() -> Bool { usleep(200_000); return !isFinished }
    func freed(by cut: () -> Void) -> Duration {
        let start = ContinuousClock.now
        cut()
        wait()
        return ContinuousClock.now - start
    }
}

extension Pair {
    /// A 1024x1024 scanout QEMU has seen, then (with `stall`) a peer that stops reading.
    func showBigScanout(stall: Bool) {
        display.setScanout(0, width: 1024, height: 1024)
        #expect(peer.waitFor(timeout: .seconds(5)) { $0.count(.scanout) == 1 })
        if stall { peer.stall() }
    }
}

/// A frame far larger than a socket buffer.
let bigFrame = pixelPattern(width: 1024, height: 1024, stride: 4096)
let bigRect = PixelRect(x: 0, y: 0, width: 1024, height: 1024)

@Suite("Display channel failures: stalls, interrupts, disconnects, garbage")
struct DisplayFailureTests {
    @Test func stalledPeerTimesOutMidFrameAndBreaksTheChannel() throws {
        let pair = try Pair(options: .init(timeout: .milliseconds(300)))
        defer { pair.close() }
        pair.showBigScanout(stall: true)
        let start = ContinuousClock.now
        pair.display.update(scanout: 0, rect: bigRect, frame: bigFrame, stride: 4096)
        let elapsed = ContinuousClock.now - start
        #expect(elapsed >= .milliseconds(250))
        #expect(elapsed < .seconds(5))
        #expect(pair.display.isBroken)
        // Everything after is a no-op that returns at once.
        let after = ContinuousClock.now
        pair.display.update(scanout: 0, rect: bigRect, frame: bigFrame, stride: 4096)
        #expect(pair.display.displayInfo() == nil)
        #expect(pair.display.edid(scanout: 0) == nil)
        #expect(ContinuousClock.now - after < .milliseconds(200))
        // The display shut the socket down: QEMU's read of the cut-off message ends with EOF
        // instead of blocking its main loop.
        pair.peer.unstall()
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.disconnected })
        #expect(pair.peer.state.updateFrames == 0)
    }

    @Test func interruptFreesAThreadStuckInAnUpdate() throws {
        let pair = try Pair(options: .init(timeout: .seconds(60)))
        defer { pair.close() }
        pair.showBigScanout(stall: true)
        let display = pair.display
        let worker = try Background { display.update(scanout: 0, rect: bigRect, frame: bigFrame, stride: 4096) }
        // Interrupted only once the update is under way (bytes of it queued on the socket): an
        // interrupt before its first byte drops it whole and breaks nothing (a CI run on the
        // loaded machine started the worker that late).
        let deadline = ContinuousClock.now + .seconds(10)
        var queued: Int32 = 0
        while ContinuousClock.now < deadline {
            if ioctl(pair.displayFD, UInt(TIOCOUTQ), &queued) == 0, queued > 0 { break }
            usleep(1_000)
        }
        #expect(queued > 0)
        #expect(worker.isStuck())
        #expect(worker.freed { display.interrupt() } < .seconds(2))
        // Cut off mid-message: the stream is out of sync for good.
        #expect(display.isBroken)
        display.resume()
        #expect(display.isBroken)
    }

    @Test func displayInfoTimesOutOnAStalledPeerWithoutBreaking() throws {
        let pair = try Pair(options: .init(timeout: .milliseconds(200)))
        defer { pair.close() }
        pair.peer.stall()
        usleep(100_000)   // stall() is seen by the peer's reader thread asynchronously
        let start = ContinuousClock.now
        #expect(pair.display.displayInfo() == nil)
        #expect(ContinuousClock.now - start < .seconds(3))
        #expect(!pair.display.isBroken)
        pair.peer.unstall()
        // The late reply to the first request is read and dropped; the second gets its own.
        #expect(pair.display.displayInfo()?.first?.enabled == true)
        #expect(pair.display.edid(scanout: 0) == DisplayChannelPeer.sampleEDID)
        #expect(!pair.display.isBroken)
    }

    @Test func interruptEndsAReplyWaitAndResumeRearms() throws {
        let pair = try Pair(options: .init(timeout: .seconds(60)))
        defer { pair.close() }
        pair.peer.stall()
        let display = pair.display
        let result = Mutex<[DisplayMode]??>(nil)
        let worker = try Background { let r = display.displayInfo(); result.withLock { $0 = .some(r) } }
        #expect(worker.isStuck())
        #expect(worker.freed { display.interrupt() } < .seconds(2))
        #expect(result.withLock { $0 } == .some(nil))
        #expect(!display.isBroken)

        // While interrupted nothing waits: unsent messages are dropped.
        let t0 = ContinuousClock.now
        #expect(display.displayInfo() == nil)
        #expect(ContinuousClock.now - t0 < .seconds(1))

        display.resume()
        pair.peer.unstall()
        #expect(display.displayInfo() != nil)
        display.setScanout(0, width: 8, height: 8)
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.count(.scanout) == 1 })
        #expect(!display.isBroken)
    }

    @Test func messagesSentWhileInterruptedAreDroppedNotBroken() throws {
        let pair = try Pair()
        defer { pair.close() }
        pair.display.interrupt()
        pair.display.setScanout(0, width: 8, height: 8)
        pair.display.cursorMove(scanout: 0, x: 1, y: 1)
        #expect(!pair.display.isBroken)
        pair.display.resume()
        pair.display.setScanout(0, width: 16, height: 16)
        #expect(pair.peer.waitFor(timeout: .seconds(5)) { $0.count(.scanout) == 1 })
        #expect(pair.peer.state.framebuffers[0]?.width == 16)
        #expect(pair.peer.state.count(.cursorPos) == 0)
    }

    @Test func closeFreesAThreadStuckInAnUpdate() throws {
        let pair = try Pair(options: .init(timeout: .seconds(60)))
        defer { pair.peer.close() }
        pair.showBigScanout(stall: true)
        let display = pair.display
        let worker = try Background { display.update(scanout: 0, rect: bigRect, frame: bigFrame, stride: 4096) }
        usleep(100_000)
        let start = ContinuousClock.now
        display.close()
        worker.wait()
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(display.isBroken)
        display.cursorMove(scanout: 0, x: 0, y: 0) // no-op after close
    }

    @Test func peerGoneBreaksTheChannelWithoutACrash() throws {
        let pair = try Pair()
        defer { pair.close() }
        #expect(pair.display.displayInfo() != nil)
        pair.showBigScanout(stall: false)
        pair.peer.close()
        // EPIPE / ECONNRESET (no SIGPIPE: the test process would die).
        pair.display.update(scanout: 0, rect: bigRect, frame: bigFrame, stride: 4096)
        pair.display.cursorMove(scanout: 0, x: 1, y: 1)
        #expect(pair.display.isBroken)
        #expect(pair.display.displayInfo() == nil)
    }

    @Test func peerGoneDuringAReplyWait() throws {
        let pair = try Pair(options: .init(timeout: .seconds(60)))
        defer { pair.close() }
        pair.peer.stall()
        let display = pair.display
        let worker = try Background { _ = display.displayInfo() }
        usleep(100_000)
        let start = ContinuousClock.now
        pair.peer.close()
        worker.wait()
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(display.isBroken)
    }

    static let malformedReplies: [(String, [UInt8])] = [
        ("short payload", DisplayMessageHeaderBytes(request: 3, flags: 4, size: 10) + [UInt8](repeating: 0, count: 10)),
        ("no reply flag", DisplayMessage.request(.getDisplayInfo, DisplayInfoReply(modes: []))),
        ("wrong request", DisplayMessage.reply(.dmabufUpdate)),
        ("unknown request", DisplayMessageHeaderBytes(request: 77, flags: 4, size: 0)),
        ("huge size", DisplayMessageHeaderBytes(request: 3, flags: 4, size: 0x7fff_ffff)),
    ]

    @Test(arguments: malformedReplies.indices)
    func malformedReplyBreaksTheChannel(index: Int) throws {
        let (name, bytes) = Self.malformedReplies[index]
        var config = DisplayChannelPeer.Configuration()
        config.replyOverride = { message in message.request == .getDisplayInfo ? bytes : nil }
        let pair = try Pair(peer: config, options: .init(timeout: .seconds(10)))
        defer { pair.close() }
        let start = ContinuousClock.now
        #expect(pair.display.displayInfo() == nil, "\(name)")
        #expect(ContinuousClock.now - start < .seconds(5), "\(name)")
        #expect(pair.display.isBroken, "\(name)")
    }

    @Test func replyArrivingInPiecesIsReassembled() throws {
        var config = DisplayChannelPeer.Configuration()
        config.replyOverride = { message in message.request == .getDisplayInfo ? [] : nil }
        let pair = try Pair(peer: config)
        defer { pair.close() }
        let modes = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: 800, height: 600), enabled: true)]
        let reply = DisplayMessage.reply(.getDisplayInfo, DisplayInfoReply(modes: modes))
        let peer = pair.peer
        let sender = try Background {
            _ = peer.waitFor(timeout: .seconds(5)) { $0.count(.getDisplayInfo) == 1 }
            for (i, byte) in reply.enumerated() {
                peer.sendRaw([byte])
                if i % 50 == 0 { usleep(1000) }
            }
        }
        defer { sender.wait() }
        #expect(pair.display.displayInfo()?.first == modes[0])
        #expect(!pair.display.isBroken)
    }

    @Test func nonOKDisplayInfoIsNilButNotBroken() throws {
        var config = DisplayChannelPeer.Configuration()
        config.replyOverride = { message in
            message.request == .getDisplayInfo ? DisplayMessage.reply(.getDisplayInfo, DisplayInfoReply(type: 0x1200, modes: [])) : nil
        }
        let pair = try Pair(peer: config)
        defer { pair.close() }
        #expect(pair.display.displayInfo() == nil)
        #expect(!pair.display.isBroken)
    }
}

func DisplayMessageHeaderBytes(request: UInt32, flags: UInt32, size: UInt32) -> [UInt8] {
    DisplayMessageHeader(request: request, flags: DisplayMessageFlags(rawValue: flags), size: size).encoded()
}

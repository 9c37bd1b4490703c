import Foundation
import SystemSupport
import Testing
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore

/// A device that answers chains whose first byte is odd at once and keeps the even ones, to be
/// handed back later from another thread (as virgl fences are).
final class DeferringDevice: VhostUserDevice {
    let queueCount = 1
    let maxQueueSize: UInt16 = 256
    let deviceFeatures: UInt64 = 0
    let kept = Mutex<[UInt16]>([])
    let completions = Mutex<QueueCompletions?>(nil)
    /// Hand kept chains back, synchronously, when the queues are about to stop (as the GPU
    /// device drains its fences).
    let releaseOnStop: Bool
    init(releaseOnStop: Bool = false) { self.releaseOnStop = releaseOnStop }
    func willStopQueues() {
        guard releaseOnStop else { return }
        let heads = kept.withLock { k in defer { k.removeAll() }; return k }
        let c = completions.withLock { $0 }
        for h in heads { c?.complete(head: h, length: 3) }
    }

    func queueStarted(_ queue: Int, completions c: QueueCompletions) { completions.withLock { $0 = c } }
    func handleChain(queue: Int, chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        var reader = ChainReader(chain: chain, memory: memory)
        var first = [UInt8](repeating: 0, count: 1)
        do { try first.withUnsafeMutableBytes { try reader.read(into: $0) } } catch { return 0 }
        if first[0] % 2 == 1 { return 1 }
        kept.withLock { $0.append(chain.head) }
        return deferredCompletion
    }
    /// Hands every kept chain back, last kept first, from a thread of its own.
    func releaseAll() {
        let heads = kept.withLock { k in defer { k.removeAll() }; return k }
        let c = completions.withLock { $0 }
        let t = Thread { for h in heads.reversed() { c?.complete(head: h, length: 2) } }
        t.start()
    }
    func reset() {}
    func disconnected() {}
}

@Suite(.serialized) struct DeferredCompletionTests {
    @Test func deferredChainsComeBackLaterAndOthersAreNotHeldBehindThem() throws {
        let started = try StartedDevice(DeferringDevice())
        let (device, f, ram, queue) = (started.device, started.f, started.ram, started.queue)
        var heads: [UInt8: UInt16] = [:]
        for tag in UInt8(0)..<8 {
            let req = ram.allocate(1), resp = ram.allocate(4)
            ram.write([tag], at: req)
            heads[tag] = queue.add([.init(req, 1, writable: false), .init(resp, 4, writable: true)])
        }
        queue.notifyDevice()
        // The odd ones come back at once, though even ones were queued before them.
        let immediate = queue.waitUsed(count: 4)
        #expect(Set(immediate.map(\.head)) == Set([1, 3, 5, 7].map { heads[UInt8($0)]! }))
        #expect(immediate.allSatisfy { $0.length == 1 })
        usleep(100_000)
        #expect(queue.collectUsed().isEmpty, "deferred chains stay out until the device returns them")
        device.releaseAll()
        let later = queue.waitUsed(count: 4)
        #expect(Set(later.map(\.head)) == Set([0, 2, 4, 6].map { heads[UInt8($0)]! }))
        #expect(later.allSatisfy { $0.length == 2 })
        // After GET_VRING_BASE a late completion is dropped, not written into a stopped ring.
        let c = try #require(device.completions.withLock { $0 })
        _ = try f.getVringBase(0)
        c.complete(head: 0, length: 9)
        usleep(50_000)
        #expect(queue.collectUsed().isEmpty)
    }

    @Test func chainsFinishedWhileStoppingStillGoBack() throws {
        let started = try StartedDevice(DeferringDevice(releaseOnStop: true))
        let (device, f, ram, queue) = (started.device, started.f, started.ram, started.queue)
        let req = ram.allocate(1), resp = ram.allocate(4)
        ram.write([2], at: req)
        let head = queue.add([.init(req, 1, writable: false), .init(resp, 4, writable: true)])
        queue.notifyDevice()
        let deadline = Date().addingTimeInterval(5)
        while device.kept.withLock({ $0.isEmpty }), Date() < deadline { usleep(1000) }
        #expect(queue.collectUsed().isEmpty)
        _ = try f.getVringBase(0)
        let used = queue.collectUsed()
        #expect(used.count == 1 && used.first?.head == head && used.first?.length == 3)
    }
}

import Dispatch
import Logging
import struct Synchronization.Atomic
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemPackage
import SystemSupport

/// Publishes the current guest memory map to queue workers. Replaced whole, never edited.
public final class GuestMemoryPublisher: Sendable {
    private let state = Mutex<(memory: GuestMemory, generation: UInt64)>((GuestMemory.empty, 0))
    public init() {}
    public func publish(_ memory: GuestMemory) { state.withLock { $0 = (memory, $0.generation &+ 1) } }
    public var current: (memory: GuestMemory, generation: UInt64) { state.withLock { $0 } }
}

/// Chains a device kept (`deferredCompletion`) and hands back from any thread: queued here and
/// put in the used ring by the queue's own worker, the only thread that touches the ring.
public final class QueueCompletions: Sendable {
    private let pending = Mutex<[(head: UInt16, length: UInt32)]>([])
    /// The worker's wake eventfd, owned (shared with the worker): a fence that signals after
    /// the worker is gone writes into this eventfd, never into an fd number reused since.
    private let wake: OwnedFileDescriptor
    private let closed = Atomic<Bool>(false)

    init(wake: OwnedFileDescriptor) { self.wake = wake }

    /// Returns chain `head` to the driver with `length` bytes written. Ignored once the worker
    /// stopped (the vring base was handed back; the driver resets the queue before reuse).
    public func complete(head: UInt16, length: UInt32) {
        guard !closed.load(ordering: .acquiring) else { return }
        pending.withLock { $0.append((head, length)) }
        EventFD.signal(wake.rawValue)
    }

    /// The chains handed back since the last call. Runs on every wake of the worker: nothing
    /// is allocated when nothing is pending.
    func take() -> [(head: UInt16, length: UInt32)] {
        pending.withLock { p in
            guard !p.isEmpty else { return [] }
            defer { p = [] }
            return p
        }
    }

    func close() { closed.store(true, ordering: .releasing) }
}

/// One virtqueue's worker: an OS thread blocked in poll(2) on the kick eventfd and a wake
/// eventfd. Pops chains, hands them to the device, returns them, signals the call eventfd;
/// chains the device deferred come back through `completions`.
final class VringWorker: Sendable {
    let index: Int
    private let kick: OwnedFileDescriptor
    private let wake: OwnedFileDescriptor
    private let call: Mutex<OwnedFileDescriptor?>
    private let enabled: Atomic<Bool>
    private let stopRequested = Atomic<Bool>(false)
    /// The thread, joined by `stop`. It holds this object until `run` returns.
    private let thread = Mutex<WorkerThread?>(nil)
    /// The avail index reached, valid once the thread has finished.
    private let finalAvail = Atomic<UInt16>(0)
    let completions: QueueCompletions

    /// @unchecked: the queue moves to the worker thread once and is used only there.
    private final class QueueBox: @unchecked Sendable { let queue: SplitVirtqueue; init(_ q: SplitVirtqueue) { queue = q } }

    init(index: Int, queue: SplitVirtqueue, kick: OwnedFileDescriptor, call: OwnedFileDescriptor?, enabled: Bool,
         memory: GuestMemoryPublisher, device: any VhostUserDevice, log: RateLimitedLogger<String>) throws {
        self.index = index
        self.kick = kick
        self.wake = try EventFD.make()
        self.completions = QueueCompletions(wake: wake)
        self.call = Mutex(call)
        self.enabled = Atomic(enabled)
        finalAvail.store(queue.nextAvail, ordering: .relaxed)
        let box = QueueBox(queue)
        device.queueStarted(index, completions: completions)
        let worker = try WorkerThread(name: "vgpu-vq\(index)") { [self] _ in
            run(box.queue, memory: memory, device: device, log: log)
        }
        thread.withLock { $0 = worker }
    }

    func setCall(_ fd: OwnedFileDescriptor?) { call.withLock { $0 = fd } }

    func setEnabled(_ on: Bool) {
        enabled.store(on, ordering: .releasing)
        EventFD.signal(wake.rawValue)   // process anything that queued up while disabled
    }

    /// Stops the thread and returns the next avail index (the vring base for GET_VRING_BASE).
    func stop() -> UInt16 {
        stopRequested.store(true, ordering: .releasing)
        EventFD.signal(wake.rawValue)
        thread.withLock { $0 }?.join()
        completions.close()
        return finalAvail.load(ordering: .acquiring)
    }

    private func run(_ queue: SplitVirtqueue, memory: GuestMemoryPublisher, device: any VhostUserDevice, log: RateLimitedLogger<String>) {
        defer {
            // Chains the device finished while the queue was being stopped still go back, so a
            // fenced command completed before GET_VRING_BASE is not lost.
            if enabled.load(ordering: .acquiring) { returnDeferred(queue) }
            finalAvail.store(queue.nextAvail, ordering: .releasing)
        }
        var generation = memory.current.generation
        var chain = DescriptorChain()
        var broken = false
        var fds = [pollfd(fd: kick.rawValue, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wake.rawValue, events: Int16(POLLIN), revents: 0)]
        // A kick may have arrived before the thread started: look once up front.
        var pendingWork = true
        while !stopRequested.load(ordering: .acquiring) {
            if !pendingWork {
                do throws(Errno) { try Poll.wait(&fds, until: nil) } catch {
                    log.logger.error("vq\(index): poll failed, errno \(error.rawValue)")
                    return
                }
                if fds[1].revents != 0 { EventFD.drain(wake.rawValue) }
                if fds[0].revents & Int16(POLLIN) != 0 { EventFD.drain(kick.rawValue) }
                if fds[0].revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0 { return }
            }
            pendingWork = false
            if stopRequested.load(ordering: .acquiring) { break }
            guard enabled.load(ordering: .acquiring), !broken else { continue }
            returnDeferred(queue)
            let snapshot = memory.current
            if snapshot.generation != generation {
                do { try queue.updateMemory(snapshot.memory); generation = snapshot.generation } catch {
                    log.log(.error, key: "vq-memory", "vq\(index): rings no longer in guest RAM after memory change: \(error); queue stopped")
                    broken = true
                    continue
                }
            }
            broken = !drain(queue, chain: &chain, memory: snapshot.memory, device: device, log: log)
        }
    }

    /// Puts chains the device finished later (fences) in the used ring.
    private func returnDeferred(_ queue: SplitVirtqueue) {
        let done = completions.take()
        guard !done.isEmpty else { return }
        for c in done { queue.addUsed(head: c.head, length: c.length) }
        notify(queue)
    }

    /// Processes every available chain; false if the queue is broken beyond recovery.
    private func drain(_ queue: SplitVirtqueue, chain: inout DescriptorChain, memory: GuestMemory,
                       device: any VhostUserDevice, log: RateLimitedLogger<String>) -> Bool {
        repeat {
            while true {
                do {
                    guard try queue.popChain(into: &chain) else { break }
                    let written = device.handleChain(queue: index, chain: chain, memory: memory)
                    if written != deferredCompletion { queue.addUsed(head: chain.head, length: written) }
                } catch {
                    log.log(.warning, key: "vq-chain", "vq\(index): bad descriptor chain: \(error)")
                    guard let head = error.recoverableHead else {
                        log.log(.error, key: "vq-broken", "vq\(index): queue stopped until the driver resets it")
                        notify(queue)
                        return false
                    }
                    queue.addUsed(head: head, length: 0)   // give the buffer back, unprocessed
                }
                if stopRequested.load(ordering: .relaxed) { notify(queue); return true }
            }
            notify(queue)
        } while (try? queue.enableKicks()) ?? false
        device.queueIdle(index)
        return true
    }

    private func notify(_ queue: SplitVirtqueue) {
        guard queue.needsNotification() else { return }
        call.withLock { fd in if let fd { EventFD.signal(fd.rawValue) } }
    }
}

import CShims
import DisplayChannel
import SystemSupport
import Testing
import VirtioCore
@testable import VirtioGPU

/// A renderer that records what dispatch asks of it and keeps only geometry.
final class RecordingRenderer: GPURenderer {
    enum Call: Equatable {
        case create(ResourceID, PixelFormat, UInt32, UInt32)
        case destroy(ResourceID)
        case attach(ResourceID, [BackingEntry])
        case detach(ResourceID)
        case transfer(ResourceID, PixelRect, UInt64)
        case pixels(ResourceID, PixelRect)
        case cursor(ResourceID)
        case reset
    }
    private let state = Mutex<(calls: [Call], geometry: [ResourceID: ResourceGeometry])>(([], [:]))

    var calls: [Call] { state.withLock { $0.calls } }

    func geometry(of id: ResourceID) -> ResourceGeometry? { state.withLock { $0.geometry[id] } }
    func createResource2D(_ id: ResourceID, format: PixelFormat, width: UInt32, height: UInt32) throws(GPUFailure) {
        state.withLock { $0.calls.append(.create(id, format, width, height)); $0.geometry[id] = ResourceGeometry(format: format, width: width, height: height) }
    }
    func destroyResource(_ id: ResourceID) throws(GPUFailure) {
        state.withLock { $0.calls.append(.destroy(id)); $0.geometry[id] = nil }
    }
    func attachBacking(_ id: ResourceID, _ backing: BackingStore) throws(GPUFailure) {
        state.withLock { $0.calls.append(.attach(id, backing.entries)) }
    }
    func detachBacking(_ id: ResourceID) throws(GPUFailure) { state.withLock { $0.calls.append(.detach(id)) } }
    func transferToHost2D(_ id: ResourceID, rect: PixelRect, offset: UInt64, memory: GuestMemory) throws(GPUFailure) {
        state.withLock { $0.calls.append(.transfer(id, rect, offset)) }
    }
    func withScanoutPixels(_ id: ResourceID, rect: PixelRect, _ body: (UnsafeRawPointer, Int) -> Void) throws(GPUFailure) {
        state.withLock { $0.calls.append(.pixels(id, rect)) }
        let zeros = [UInt8](repeating: 0, count: Int(rect.width) * Int(rect.height) * 4)
        zeros.withUnsafeBytes { body($0.baseAddress!, Int(rect.width) * 4) }
    }
    func copyCursorImage(_ id: ResourceID, into destination: UnsafeMutableRawPointer) throws(GPUFailure) {
        state.withLock { $0.calls.append(.cursor(id)) }
    }
    func resources() -> [RendererResourceInfo] { [] }
    func reset() { state.withLock { $0.calls.append(.reset); $0.geometry = [:] } }
}

@Suite struct DispatchTests {
    private func harness() -> (Harness, RecordingRenderer) {
        let r = RecordingRenderer()
        return (Harness(config: GPUDeviceConfig(numScanouts: 2), renderer: r), r)
    }

    @Test func decodedArgumentsReachTheRenderer() {
        let (h, r) = harness()
        let a = h.guest.alloc(4096)
        let b = h.guest.alloc(4096)
        #expect(h.send(Req.create2D(3, format: VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM.rawValue, 40, 30)).isOK)
        #expect(h.send(Req.attach(3, [(a, 4096), (b, 704)])).isOK)
        #expect(h.send(Req.transfer(3, rect(1, 2, 3, 4), offset: 0x1234)).isOK)
        #expect(h.send(Req.setScanout(1, 3, rect(0, 0, 40, 30))).isOK)
        #expect(h.send(Req.flush(3, rect(5, 6, 7, 8))).isOK)
        #expect(h.send(Req.detach(3)).isOK)
        #expect(h.send(Req.unref(3)).isOK)
        #expect(r.calls == [
            .create(ResourceID(3), .x8b8g8r8, 40, 30),
            .attach(ResourceID(3), [BackingEntry(address: a, length: 4096), BackingEntry(address: b, length: 704)]),
            .transfer(ResourceID(3), PixelRect(x: 1, y: 2, width: 3, height: 4), 0x1234),
            .pixels(ResourceID(3), PixelRect(x: 0, y: 0, width: 40, height: 30)),
            .pixels(ResourceID(3), PixelRect(x: 5, y: 6, width: 7, height: 8)),
            .detach(ResourceID(3)),
            .destroy(ResourceID(3)),
        ])
    }

    @Test func badInputNeverReachesTheRenderer() {
        let (h, r) = harness()
        _ = h.send(Array(Req.create2D(1, format: 1, 4, 4)[0..<35]))        // truncated
        _ = h.send(Req.create2D(0, format: 1, 4, 4))                        // id 0
        _ = h.send(Req.create2D(1, format: 1234, 4, 4))                     // format
        _ = h.send(Req.create2D(1, format: 1, 0, 4))                        // size
        _ = h.send(Req.create2D(1, format: 1, 4, 4), responseSize: 0)       // no room
        _ = h.send(Req.attach(1, [(h.guest.alloc(64), 64)]))                // unknown resource
        #expect(r.calls.isEmpty)
        h.create(1, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4)
        _ = h.send(Req.attach(1, [(GuestPhysicalAddress(0x10), 64)]))       // outside RAM
        _ = h.send(Req.attach(1, [(h.guest.alloc(64), 64)], nrEntries: 9))  // entries missing
        _ = h.send(Req.setScanout(0, 1, rect(0, 0, 5, 4)))                  // rect outside
        _ = h.send(Req.setScanout(2, 1, rect(0, 0, 4, 4)))                  // scanout
        _ = h.send(Req.flush(1, rect(4, 0, 1, 1)))                          // rect outside
        #expect(r.calls == [.create(ResourceID(1), .b8g8r8x8, 4, 4)])
    }

    @Test func resetReachesTheRenderer() {
        let (h, r) = harness()
        h.gpu.reset()
        #expect(r.calls == [.reset])
    }
}

@Suite struct ConcurrencyTests {
    /// The control and cursor workers run on different threads against shared state.
    @Test func controlAndCursorQueuesConcurrently() async {
        let h = Harness()
        h.upload(1, VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, 64, 64, image: patternImage("RGBA", 64, 64))
        #expect(h.send(Req.setScanout(0, 1, rect(0, 0, 64, 64))).isOK)
        // Pre-build chains so the tasks only call the processor.
        let gpu = h.gpu
        let memory = h.guest.memory
        let controlChains = (0..<200).map { i -> DescriptorChain in
            let req = i % 2 == 0 ? Req.transfer(1, rect(0, 0, 64, 64), offset: 0) : Req.flush(1, rect(0, 0, 64, 64))
            return DescriptorChain(head: 0, descriptors: [h.guest.readable(req), h.guest.writable(24)])
        }
        let cursorChains = (0..<200).map { _ in
            DescriptorChain(head: 0, descriptors: [h.guest.readable(Req.cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, x: 1, y: 2, id: 1))])
        }
        h.display.clear()
        await withTaskGroup(of: Int.self) { group in
            group.addTask { controlChains.reduce(0) { $0 + Int(gpu.handleControl($1, memory: memory)) } }
            group.addTask { cursorChains.reduce(0) { $0 + Int(gpu.handleCursor($1, memory: memory)) } }
            var total = 0
            for await n in group { total += n }
            #expect(total == 200 * 24)
        }
        let events = h.display.events
        #expect(events.filter { if case .cursorUpdate = $0 { true } else { false } }.count == 200)
        #expect(events.filter { if case .update = $0 { true } else { false } }.count == 100)
    }
}

import CShims
import DisplayChannel
import FrontendSide
import SystemSupport
import Testing
import VGPUTestSupport
import VirtioCore
@testable import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif

// MARK: guest memory

/// Guest RAM made of one or more regions, with a bump allocator for request/response buffers.
final class TestGuest {
    let memory: GuestMemory
    private let regions: [(start: UInt64, size: UInt64, mapping: AnonymousMapping)]
    private var next: UInt64

    /// Default: one 8 MiB region at 0x100000.
    init(regions layout: [(start: UInt64, size: Int)] = [(0x10_0000, 8 << 20)]) {
        var rs: [(UInt64, UInt64, AnonymousMapping)] = []
        var gm: [GuestMemoryRegion] = []
        for (start, size) in layout {
            let m = AnonymousMapping(size: size)
            rs.append((start, UInt64(size), m))
            gm.append(GuestMemoryRegion(guestStart: GuestPhysicalAddress(start), size: UInt64(size),
                                        frontendStart: FrontendVirtualAddress(0x7000_0000_0000 + start), fileOffset: 0,
                                        hostBase: m.base, mapping: m))
        }
        regions = rs
        memory = try! GuestMemory(regions: gm)
        next = layout[0].start
    }

    /// `size` bytes of guest RAM from the first region, 64-byte aligned, zeroed.
    func alloc(_ size: Int, align: UInt64 = 64) -> GuestPhysicalAddress {
        next = (next + align - 1) / align * align
        let a = GuestPhysicalAddress(next)
        next += UInt64(max(size, 1))
        precondition(next <= regions[0].start + regions[0].size, "test guest RAM exhausted")
        host(a).initializeMemory(as: UInt8.self, repeating: 0, count: size)
        return a
    }

    func host(_ a: GuestPhysicalAddress) -> UnsafeMutableRawPointer {
        for r in regions where a.raw >= r.start && a.raw < r.start + r.size {
            return r.mapping.base + Int(a.raw - r.start)
        }
        fatalError("address \(a) not in test guest RAM")
    }

    func write(_ bytes: [UInt8], at a: GuestPhysicalAddress) {
        try! memory.write(bytes.withUnsafeBytes { UnsafeRawBufferPointer($0) }, to: a)
    }

    func read(_ count: Int, at a: GuestPhysicalAddress) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { try! memory.read(into: $0, from: a) }
        return out
    }

    /// Puts `bytes` into guest RAM and returns a readable descriptor for them.
    func readable(_ bytes: [UInt8]) -> Descriptor {
        let a = alloc(bytes.count)
        write(bytes, at: a)
        return Descriptor(address: a, length: UInt32(bytes.count), isWritable: false)
    }

    /// A writable descriptor of `size` bytes filled with `fill`.
    func writable(_ size: Int, fill: UInt8 = 0xEE) -> Descriptor {
        let a = alloc(size)
        if size > 0 { host(a).initializeMemory(as: UInt8.self, repeating: fill, count: size) }
        return Descriptor(address: a, length: UInt32(size), isWritable: true)
    }
}

// MARK: wire helpers

func bytes<T>(of value: T) -> [UInt8] {
    withUnsafeBytes(of: value) { Array($0) }
}

func load<T>(_ type: T.Type, from bytes: [UInt8], at offset: Int = 0) -> T {
    bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
}

/// A control header with any flags and fence id (the tests set them apart, to send lies).
func hdr(_ type: virtio_gpu_ctrl_type, flags: UInt32 = 0, fence: UInt64 = 0, ctx: UInt32 = 0, ring: UInt8 = 0) -> virtio_gpu_ctrl_hdr {
    var h = GPUCommands.header(type, flags: flags, context: ctx, ring: ring)
    h.fence_id = fence
    return h
}

func rect(_ x: UInt32, _ y: UInt32, _ w: UInt32, _ h: UInt32) -> virtio_gpu_rect { GPUCommands.rect(x, y, w, h) }

/// The request builders are FrontendSide's (one encoder per command for driver and tests).
typealias Req = GPUCommands

/// What came back in the response buffer.
struct Response {
    let written: UInt32
    let bytes: [UInt8]
    var header: virtio_gpu_ctrl_hdr { load(virtio_gpu_ctrl_hdr.self, from: bytes) }
    var type: UInt32 { header.type }
    var isOK: Bool { type == VIRTIO_GPU_RESP_OK_NODATA.rawValue }
    var error: GPUError? { GPUError(responseType: type) }
}

// MARK: display

enum DisplayEvent: Equatable, CustomStringConvertible {
    case setScanout(UInt32, width: UInt32, height: UInt32)
    case update(UInt32, rect: PixelRect, stride: Int, pixels: [UInt8])
    case cursorUpdate(UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: [UInt8])
    case cursorMove(UInt32, x: UInt32, y: UInt32)
    case cursorHide(UInt32)

    var description: String {
        switch self {
        case let .setScanout(i, w, h): "setScanout(\(i), \(w)x\(h))"
        case let .update(i, r, s, p): "update(\(i), \(r), stride \(s), \(p.count) bytes)"
        case let .cursorUpdate(i, x, y, hx, hy, p): "cursorUpdate(\(i), \(x),\(y) hot \(hx),\(hy), \(p.count) bytes)"
        case let .cursorMove(i, x, y): "cursorMove(\(i), \(x),\(y))"
        case let .cursorHide(i): "cursorHide(\(i))"
        }
    }
}

/// A display that records every call; pixels are copied out row by row (rect.width*4 per row).
final class RecordingDisplay: DisplaySink {
    private struct State {
        var events: [DisplayEvent] = []
        var modes: [DisplayMode]?
        var edids: [UInt32: [UInt8]] = [:]
    }
    private let state = Mutex(State())

    init(modes: [DisplayMode]? = nil, edids: [UInt32: [UInt8]] = [:]) {
        state.withLock { $0.modes = modes; $0.edids = edids }
    }

    var events: [DisplayEvent] { state.withLock { $0.events } }
    func clear() { state.withLock { $0.events.removeAll() } }
    var updates: [DisplayEvent] { events.filter { if case .update = $0 { true } else { false } } }

    func displayInfo() -> [DisplayMode]? { state.withLock { $0.modes } }
    func edid(scanout: UInt32) -> [UInt8]? { state.withLock { $0.edids[scanout] } }
    func setScanout(_ id: UInt32, width: UInt32, height: UInt32) {
        state.withLock { $0.events.append(.setScanout(id, width: width, height: height)) }
    }
    func update(scanout id: UInt32, rect: PixelRect, pixels: UnsafeRawPointer, stride: Int) {
        var copy: [UInt8] = []
        let row = Int(rect.width) * 4
        for y in 0..<Int(rect.height) {
            copy += UnsafeRawBufferPointer(start: pixels + y * stride, count: row)
        }
        state.withLock { $0.events.append(.update(id, rect: rect, stride: stride, pixels: copy)) }
    }
    func cursorUpdate(scanout id: UInt32, x: UInt32, y: UInt32, hotX: UInt32, hotY: UInt32, pixels: UnsafeRawPointer) {
        let copy = Array(UnsafeRawBufferPointer(start: pixels, count: 64 * 64 * 4))
        state.withLock { $0.events.append(.cursorUpdate(id, x: x, y: y, hotX: hotX, hotY: hotY, pixels: copy)) }
    }
    func cursorMove(scanout id: UInt32, x: UInt32, y: UInt32) {
        state.withLock { $0.events.append(.cursorMove(id, x: x, y: y)) }
    }
    func cursorHide(scanout id: UInt32) {
        state.withLock { $0.events.append(.cursorHide(id)) }
    }
}

// MARK: harness

/// A device over test guest RAM with a recording display.
final class Harness {
    let guest: TestGuest
    let display: RecordingDisplay
    let gpu: GPUCommandProcessor
    let registry: ResourceUUIDRegistry

    init(config: GPUDeviceConfig = GPUDeviceConfig(), registry: ResourceUUIDRegistry = ResourceUUIDRegistry(),
         deviceID: UInt32 = 1, guest: TestGuest = TestGuest(), display: RecordingDisplay = RecordingDisplay(),
         renderer: (any GPURenderer)? = nil) {
        self.guest = guest
        self.display = display
        self.registry = registry
        if let renderer {
            gpu = GPUCommandProcessor(config: config, display: display, uuids: registry, deviceID: GPUDeviceID(deviceID), renderer: renderer)
        } else {
            gpu = GPUCommandProcessor(config: config, display: display, uuids: registry, deviceID: GPUDeviceID(deviceID))
        }
    }

    /// Sends `request` (split into readable descriptors at `splits`) with a writable buffer of
    /// `responseSize` bytes on the control queue, then lets the queue go idle, as the queue
    /// worker does when the driver sends one request at a time.
    @discardableResult
    func send(_ request: [UInt8], responseSize: Int = 2048, splits: [Int] = []) -> Response {
        let response = sendInBatch(request, responseSize: responseSize, splits: splits)
        gpu.controlQueueIdle()
        return response
    }

    /// Like `send`, but the queue does not go idle afterwards: the next request is part of the
    /// same batch (SET_SCANOUT and RESOURCE_FLUSH in one kick, as Linux sends a page flip).
    @discardableResult
    func sendInBatch(_ request: [UInt8], responseSize: Int = 2048, splits: [Int] = []) -> Response {
        var descriptors: [Descriptor] = []
        var start = 0
        for cut in splits + [request.count] where cut > start {
            descriptors.append(guest.readable(Array(request[start..<cut])))
            start = cut
        }
        let out = guest.writable(responseSize)
        descriptors.append(out)
        let written = gpu.handleControl(DescriptorChain(head: 0, descriptors: descriptors), memory: guest.memory)
        return Response(written: written, bytes: responseSize > 0 ? guest.read(responseSize, at: out.address) : [])
    }

    /// Sends `request` on the cursor queue; returns (bytes written, the writable buffer afterwards).
    func sendCursor(_ request: [UInt8], responseSize: Int = 0) -> (UInt32, [UInt8]) {
        var descriptors = [guest.readable(request)]
        var out: Descriptor?
        if responseSize > 0 {
            out = guest.writable(responseSize)
            descriptors.append(out!)
        }
        let n = gpu.handleCursor(DescriptorChain(head: 0, descriptors: descriptors), memory: guest.memory)
        return (n, out.map { guest.read(responseSize, at: $0.address) } ?? [])
    }

    /// Creates a resource and checks the answer is OK.
    func create(_ id: UInt32, _ format: virtio_gpu_formats, _ w: UInt32, _ h: UInt32) {
        let r = send(Req.create2D(id, format: format.rawValue, w, h))
        #expect(r.isOK, "create \(id) failed: \(String(r.type, radix: 16))")
    }

    /// Puts `image` in guest RAM as one entry, attaches it, and returns its address.
    @discardableResult
    func attach(_ id: UInt32, image: [UInt8]) -> GuestPhysicalAddress {
        let a = guest.alloc(image.count)
        guest.write(image, at: a)
        let r = send(Req.attach(id, [(a, UInt32(image.count))]))
        #expect(r.isOK, "attach \(id) failed: \(String(r.type, radix: 16))")
        return a
    }

    /// Create + attach + full transfer of `image` (tightly packed, width*4 stride).
    func upload(_ id: UInt32, _ format: virtio_gpu_formats, _ w: UInt32, _ h: UInt32, image: [UInt8]) {
        create(id, format, w, h)
        attach(id, image: image)
        let r = send(Req.transfer(id, rect(0, 0, w, h), offset: 0))
        #expect(r.isOK, "transfer failed")
    }

    /// The host copy of resource `id`.
    func hostPixels(_ id: UInt32) -> [UInt8] {
        guard let s = gpu.hostStorage(of: ResourceID(id)) else { return [] }
        return Array(UnsafeRawBufferPointer(start: s.base, count: s.length))
    }
}

/// The eight formats with their memory byte order (independent of the implementation's tables).
let formatOrders: [(format: virtio_gpu_formats, order: String)] = [
    (VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM, "BGRA"), (VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, "BGRX"),
    (VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM, "ARGB"), (VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM, "XRGB"),
    (VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM, "RGBA"), (VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM, "XBGR"),
    (VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM, "ABGR"), (VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM, "RGBX"),
]

/// Components of the test pattern at (x, y).
func patternRGBA(_ x: Int, _ y: Int) -> (r: UInt8, g: UInt8, b: UInt8, a: UInt8) {
    (UInt8(truncatingIfNeeded: 10 + x * 7), UInt8(truncatingIfNeeded: 20 + y * 13), UInt8(truncatingIfNeeded: 0x80 ^ (x + 3 * y)), UInt8(truncatingIfNeeded: 0x30 + x + y))
}

/// A `w`×`h` image of the pattern laid out in `order` (A and X bytes both get the alpha value).
func patternImage(_ order: String, _ w: Int, _ h: Int) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(w * h * 4)
    for y in 0..<h {
        for x in 0..<w {
            let p = patternRGBA(x, y)
            for c in order {
                switch c {
                case "R": out.append(p.r)
                case "G": out.append(p.g)
                case "B": out.append(p.b)
                default: out.append(p.a)
                }
            }
        }
    }
    return out
}

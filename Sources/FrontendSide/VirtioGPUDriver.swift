import CShims
import VhostUser
import VirtioCore

/// A virtio-gpu driver over `VhostUserFrontend`: builds commands from the uapi structs, places
/// them in guest RAM, and reads the responses. What the Linux driver does, minus the kernel.
/// Used by the in-process end-to-end tests and by vgpu-bench.
public final class VirtioGPUDriver {
    public let frontend: VhostUserFrontend
    public let ram: GuestRAM
    public let control: DriverQueue
    public let cursor: DriverQueue
    /// Guest RAM reserved for requests and responses, reused by every command.
    private let requestArea: GuestPhysicalAddress
    private let responseArea: GuestPhysicalAddress
    public static let areaSize = 64 * 1024
    /// Request and response slots `pumpFrames` reuses.
    private var frameSlots: [(GuestPhysicalAddress, GuestPhysicalAddress)] = []
    public var timeout: Double = 5

    public struct Response {
        public let type: UInt32
        public let bytes: [UInt8]
        public var header: virtio_gpu_ctrl_hdr { bytes.withUnsafeBytes { $0.loadUnaligned(as: virtio_gpu_ctrl_hdr.self) } }
        public var isOK: Bool { type >= VIRTIO_GPU_RESP_OK_NODATA.rawValue && type < VIRTIO_GPU_RESP_ERR_UNSPEC.rawValue }
        public func load<T: BitwiseCopyable>(_ t: T.Type) -> T? {
            bytes.count >= MemoryLayout<T>.size ? bytes.withUnsafeBytes { $0.loadUnaligned(as: T.self) } : nil
        }
    }

    public enum DriverError: Error, CustomStringConvertible {
        case timeout(String)
        public var description: String { switch self { case let .timeout(w): "no response to \(w)" } }
    }

    /// Sets up RAM and both queues and starts the device the way QEMU does.
    public init(frontend: VhostUserFrontend, ramSize: UInt64 = 64 << 20, queueSize: UInt16 = 256, features: UInt64? = nil) throws {
        self.frontend = frontend
        ram = try GuestRAM(size: ramSize)
        control = try DriverQueue(ram: ram, size: queueSize)
        cursor = try DriverQueue(ram: ram, size: queueSize)
        requestArea = ram.allocate(Self.areaSize, alignment: 4096)
        responseArea = ram.allocate(Self.areaSize, alignment: 4096)
        try frontend.start(ram: ram, queues: [control, cursor], features: features)
    }

    /// Sends one request (struct, plus trailing bytes such as mem entries) and waits for the response.
    public func submit<T: BitwiseCopyable>(_ request: T, trailing: [UInt8] = [], responseSize: Int = MemoryLayout<virtio_gpu_ctrl_hdr>.size,
                                           queue: DriverQueue? = nil, indirect: Bool = false) throws -> Response {
        let bytes = withUnsafeBytes(of: request) { Array($0) }
        return try submitRaw(bytes + trailing, responseSize: responseSize, queue: queue, indirect: indirect)
    }

    /// Sends raw request bytes (bad-input tests: truncated commands, garbage).
    public func submitRaw(_ request: [UInt8], responseSize: Int = MemoryLayout<virtio_gpu_ctrl_hdr>.size, queue: DriverQueue? = nil,
                          indirect: Bool = false) throws -> Response {
        let q = queue ?? control
        precondition(request.count <= Self.areaSize && responseSize <= Self.areaSize)
        ram.write(request, at: requestArea)
        memsetGuest(responseArea, 0, responseSize)
        var buffers: [DriverQueue.Buffer] = []
        if !request.isEmpty { buffers.append(.init(requestArea, UInt32(request.count), writable: false)) }
        if responseSize > 0 { buffers.append(.init(responseArea, UInt32(responseSize), writable: true)) }
        let head = q.add(buffers, indirect: indirect)
        q.notifyDevice()
        let used = q.waitUsed(timeout: timeout)
        guard let entry = used.first(where: { $0.head == head }) else { throw DriverError.timeout("request of \(request.count) bytes") }
        let n = min(Int(entry.length), responseSize)
        let bytes = ram.bytes(at: responseArea, count: n)
        let type: UInt32 = n >= 4 ? bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } : 0
        return Response(type: type, bytes: bytes)
    }

    private func memsetGuest(_ a: GuestPhysicalAddress, _ v: UInt8, _ n: Int) {
        ram.pointer(a).initializeMemory(as: UInt8.self, repeating: v, count: n)
    }

    // MARK: command builders

    public static func header(_ type: virtio_gpu_ctrl_type, fence: UInt64? = nil) -> virtio_gpu_ctrl_hdr {
        GPUCommands.header(type, fence: fence)
    }

    public func getDisplayInfo() throws -> Response {
        try submitRaw(GPUCommands.displayInfo(), responseSize: MemoryLayout<virtio_gpu_resp_display_info>.size)
    }

    public func getEDID(scanout: UInt32) throws -> Response {
        try submitRaw(GPUCommands.getEDID(scanout), responseSize: MemoryLayout<virtio_gpu_resp_edid>.size)
    }

    public func createResource2D(id: UInt32, format: UInt32 = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, width: UInt32, height: UInt32) throws -> Response {
        try submitRaw(GPUCommands.create2D(id, format: format, width, height))
    }

    public func unref(id: UInt32) throws -> Response { try submitRaw(GPUCommands.unref(id)) }

    /// ATTACH_BACKING with the given (address, length) entries.
    public func attachBacking(id: UInt32, entries: [(GuestPhysicalAddress, UInt32)]) throws -> Response {
        try submitRaw(GPUCommands.attach(id, entries))
    }

    public func detachBacking(id: UInt32) throws -> Response { try submitRaw(GPUCommands.detach(id)) }

    public static func rect(_ x: UInt32, _ y: UInt32, _ w: UInt32, _ h: UInt32) -> virtio_gpu_rect { GPUCommands.rect(x, y, w, h) }

    public func setScanout(_ scanout: UInt32, id: UInt32, rect r: virtio_gpu_rect) throws -> Response {
        try submitRaw(GPUCommands.setScanout(scanout, id, r))
    }

    public func transferToHost2D(id: UInt32, rect r: virtio_gpu_rect, offset: UInt64 = 0, fence: UInt64? = nil) throws -> Response {
        try submitRaw(GPUCommands.transfer(id, r, offset: offset, fence: fence))
    }

    /// RESOURCE_FLUSH; with `fence`, fenced as Linux fences the flush of a page flip.
    public func flush(id: UInt32, rect r: virtio_gpu_rect, fence: UInt64? = nil) throws -> Response {
        try submitRaw(GPUCommands.flush(id, r, fence: fence))
    }

    public func assignUUID(id: UInt32) throws -> Response {
        try submitRaw(GPUCommands.assignUUID(id), responseSize: MemoryLayout<virtio_gpu_resp_resource_uuid>.size)
    }

    public func updateCursor(scanout: UInt32, id: UInt32, x: UInt32, y: UInt32, hotX: UInt32 = 0, hotY: UInt32 = 0, move: Bool = false) throws -> Response {
        try submitRaw(GPUCommands.cursor(move ? VIRTIO_GPU_CMD_MOVE_CURSOR : VIRTIO_GPU_CMD_UPDATE_CURSOR, scanout: scanout,
                                         x: x, y: y, id: id, hotX: hotX, hotY: hotY), queue: cursor)
    }

    // MARK: pipelined frames (benchmarks)

    /// What one benchmark frame sends.
    public enum FrameWorkload: String, CaseIterable, Sendable {
        /// TRANSFER_TO_HOST_2D + RESOURCE_FLUSH of the whole resource: what a guest does per frame.
        case transferFlush = "transfer+flush"
        /// RESOURCE_FLUSH only: the display path alone.
        case flush
        /// TRANSFER_TO_HOST_2D only: the guest-memory copy alone.
        case transfer
    }

    /// Queues `frames` frames of `workload` for a full resource, keeping up to `depth` frames in
    /// flight, like a guest compositor. Returns when all completed.
    public func pumpFrames(id: UInt32, width: UInt32, height: UInt32, frames: Int, depth: Int = 8,
                           workload: FrameWorkload = .transferFlush) throws {
        var t = virtio_gpu_transfer_to_host_2d()
        t.hdr = Self.header(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D)
        t.resource_id = id; t.r = Self.rect(0, 0, width, height)
        var f = virtio_gpu_resource_flush()
        f.hdr = Self.header(VIRTIO_GPU_CMD_RESOURCE_FLUSH)
        f.resource_id = id; f.r = Self.rect(0, 0, width, height)
        let perFrame = workload == .transferFlush ? 2 : 1
        // One request slot per in-flight command, reused; each slot holds one command kind.
        // Allocated once per driver and grown (guest RAM is never given back).
        while frameSlots.count < perFrame * depth { frameSlots.append((ram.allocate(128), ram.allocate(64))) }
        let slots = Array(frameSlots.prefix(perFrame * depth))
        func isTransfer(_ slot: Int) -> Bool {
            switch workload { case .transferFlush: slot % 2 == 0; case .transfer: true; case .flush: false }
        }
        for (i, (req, _)) in slots.enumerated() {
            if isTransfer(i) { ram.write(t, at: req) } else { ram.write(f, at: req) }
        }
        var submitted = 0, completed = 0, next = 0
        let total = frames * perFrame
        while completed < total {
            while submitted < total && submitted - completed < slots.count {
                let (req, resp) = slots[next]
                let size = isTransfer(next) ? MemoryLayout.size(ofValue: t) : MemoryLayout.size(ofValue: f)
                control.add([.init(req, UInt32(size), writable: false), .init(resp, 24, writable: true)])
                next = (next + 1) % slots.count
                submitted += 1
            }
            control.notifyDevice()
            let used = control.waitUsed(count: 1, timeout: timeout)
            guard !used.isEmpty else { throw DriverError.timeout("frame \(completed / perFrame)") }
            completed += used.count
        }
    }
}

import CShims
import Logging
import SystemPackage
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// Serves one vhost-user frontend connection for one device: the connection thread runs
/// `run()`, decoding and validating each message before it touches any state.
public final class VhostUserConnection: Sendable {
    /// Protocol features this server implements itself.
    public static let serverProtocolFeatures: VhostUserProtocolFeatures = [.replyAck, .configureMemSlots, .resetDevice]
    /// Transport features offered with every device.
    public static let transportFeatures: UInt64 =
        VirtioFeature.version1 | VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx | VirtioFeature.protocolFeatures
    /// Memory slots offered for ADD_MEM_REG (GET_MAX_MEM_SLOTS).
    public static let maxMemorySlots = 32

    private let socket: OwnedFileDescriptor
    private let device: any VhostUserDevice
    private let log: RateLimitedLogger<String>
    private let memory = GuestMemoryPublisher()
    private let state: Mutex<State>
    /// Seconds a backend-channel send waits for the frontend's ack.
    private let backendAckTimeout: Double
    /// Signalled by the SIGBUS guard when guest RAM this connection mapped shrank under the
    /// mapping (issue 11 §3.1): the connection is dropped, the process and other devices live.
    private let faultSignal: OwnedFileDescriptor?

    struct Vring {
        var size: UInt16 = 0
        var base: UInt16 = 0
        var addresses: VringAddresses?
        var call: OwnedFileDescriptor?
        var err: OwnedFileDescriptor?
        var enabled = false
        var worker: VringWorker?
    }

    struct State {
        var ackedFeatures: UInt64 = 0
        var ackedProtocol: VhostUserProtocolFeatures = []
        var regions: [GuestMemoryRegion] = []
        var vrings: [Vring]
        var backendChannel: BackendRequestChannel?
    }

    public init(socket: OwnedFileDescriptor, device: any VhostUserDevice, logger: Logger, backendAckTimeout: Double = 1.0) {
        self.socket = socket
        self.backendAckTimeout = backendAckTimeout
        self.faultSignal = try? EventFD.make()
        self.device = device
        self.log = RateLimitedLogger(logger: logger)
        self.state = Mutex(State(vrings: Array(repeating: Vring(), count: device.queueCount)))
    }

    public var offeredFeatures: UInt64 { Self.transportFeatures | device.deviceFeatures }
    public var offeredProtocolFeatures: VhostUserProtocolFeatures {
        var f = Self.serverProtocolFeatures.union(device.protocolFeatures)
        if f.contains(.sharedObject) { f.insert(.backendReq) }
        return f
    }

    /// Serves messages until the frontend disconnects, then releases everything the connection
    /// held: workers stopped, guest memory unmapped, every fd closed.
    public func run() {
        defer { teardown() }
        while true {
            let message: VhostUserMessage
            do {
                guard let m = try VhostUserMessage.read(from: socket.rawValue, until: nil, wake: faultSignal?.rawValue) else {
                    log.logger.info("frontend disconnected")
                    return
                }
                message = m
            } catch .canceled {
                let regions = state.withLock { $0.regions }.filter { ($0.mapping as? SharedFileMapping)?.faulted == true }
                    .map { "0x\(String($0.guestStart.raw, radix: 16))+0x\(String($0.size, radix: 16))" }
                log.logger.error("guest RAM shrank under its mapping (SIGBUS caught in \(regions.joined(separator: ", "))): the frontend broke the memory contract; connection dropped")
                return
            } catch {
                log.logger.warning("connection closed: \(error)")
                return
            }
            guard message.header.flags & VhostUserHeaderFlags.versionMask == VhostUserHeaderFlags.version else {
                log.logger.error("bad vhost-user version in flags 0x\(String(message.header.flags, radix: 16)); closing")
                return
            }
            do {
                try dispatch(message)
            } catch {
                log.logger.warning("connection closed while replying: \(error)")
                return
            }
        }
    }

    private func teardown() {
        stopAllWorkers()
        // The backend channel outlives this reset: the device may still send REMOVEs on it.
        state.withLock { s in
            let channel = s.backendChannel
            s = State(vrings: Array(repeating: Vring(), count: device.queueCount))
            s.backendChannel = channel
        }
        memory.publish(GuestMemory.empty)
        device.disconnected()
        device.backendChannelChanged(nil)
        state.withLock { s in
            s.backendChannel?.close()
            s.backendChannel = nil
        }
    }

    // MARK: dispatch

    private func dispatch(_ message: VhostUserMessage) throws(Errno) {
        let code = message.header.request
        guard let request = VhostUserRequest(rawValue: code) else {
            log.log(.error, key: "vu-unknown", "unknown vhost-user request \(code), \(message.payload.count) bytes")
            try ack(message, ok: false)
            return
        }
        log.logger.debug("\(request.name) (\(message.payload.count) bytes, \(message.fds.count) fds)")
        if request == .getSharedObject {
            try getSharedObject(message)
            return
        }
        do {
            if let reply = try handle(request, message) {
                try send(request, reply)
            } else {
                try ack(message, ok: true)
            }
        } catch let error as VhostUserMessageError {
            log.log(.error, key: "vu-\(request.name)", "\(error)")
            if request.alwaysReplies {
                try send(request, U64Payload(1).bytes)   // a reply is due: say failure
            } else {
                try ack(message, ok: false)
            }
        } catch let e as Errno {
            throw e
        } catch {
            log.logger.error("\(request.name): \(error)")
            try ack(message, ok: false)
        }
    }

    /// GET_SHARED_OBJECT: the reply echoes the UUID, with the object's fd attached when the device
    /// knows it and no fd otherwise (libvhost-user's behaviour; QEMU takes "no fd" as failure).
    private func getSharedObject(_ m: VhostUserMessage) throws(Errno) {
        let negotiated = state.withLock { $0.ackedProtocol.contains(.sharedObject) }
        let shared = SharedObjectPayload(decoding: m.payload)
        var fd: OwnedFileDescriptor?
        if !negotiated {
            log.log(.warning, key: "vu-get-shared", "GET_SHARED_OBJECT without SHARED_OBJECT negotiated")
        } else if let shared, m.fds.isEmpty {
            fd = device.sharedObject(uuid: shared.uuid)
        } else {
            log.log(.warning, key: "vu-get-shared", "GET_SHARED_OBJECT: \(m.payload.count) bytes, \(m.fds.count) fds; expected 16, 0")
        }
        let echo = shared ?? SharedObjectPayload.zero
        try VhostUserMessage.write(to: socket.rawValue, request: VhostUserRequest.getSharedObject.rawValue,
                                   flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply, payload: echo.bytes,
                                   fds: fd.map { [$0.rawValue] } ?? [])
        _ = fd   // closed here, after the send
    }

    private func setBackendReqFD(_ m: VhostUserMessage) throws(VhostUserMessageError) {
        let name = VhostUserRequest.setBackendReqFD.name
        let acked = state.withLock { $0.ackedProtocol }
        guard acked.contains(.backendReq) else { throw .unsupported(request: "\(name) without BACKEND_REQ negotiated") }
        guard m.payload.count == 0 || m.payload.count == 8 else { throw .badSize(request: name, got: m.payload.count, expected: "0 or 8") }
        guard m.fds.count == 1 else { throw .badFDCount(request: name, got: m.fds.count, expected: 1) }
        // Our own dup: the message's fd object closes its copy when the message is dropped.
        let raw = dup(m.fds[0].rawValue)
        guard raw >= 0 else { throw .failed(request: name, "dup: errno \(errno)") }
        let channel: BackendRequestChannel
        do {
            channel = try BackendRequestChannel(socket: OwnedFileDescriptor(raw), replyAck: acked.contains(.replyAck), ackTimeout: backendAckTimeout)
        } catch {
            throw .failed(request: name, "\(error)")
        }
        let old = state.withLock { s -> BackendRequestChannel? in
            let old = s.backendChannel
            s.backendChannel = channel
            return old
        }
        old?.close()
        device.backendChannelChanged(channel)
    }

    private func send(_ request: VhostUserRequest, _ payload: [UInt8]) throws(Errno) {
        try VhostUserMessage.write(to: socket.rawValue, request: request.rawValue,
                                   flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply, payload: payload)
    }

    /// REPLY_ACK: a u64 status when the frontend asked for one and the feature was negotiated.
    private func ack(_ message: VhostUserMessage, ok: Bool) throws(Errno) {
        let acked = state.withLock { $0.ackedProtocol.contains(.replyAck) }
        guard acked, message.header.needsReply else { return }
        try VhostUserMessage.write(to: socket.rawValue, request: message.header.request,
                                   flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply,
                                   payload: U64Payload(ok ? 0 : 1).bytes)
    }

    /// Handles one request. Returns a reply payload for requests that have one.
    private func handle(_ request: VhostUserRequest, _ m: VhostUserMessage) throws -> [UInt8]? {
        func expect(size: Int, fds: Int = 0) throws(VhostUserMessageError) {
            guard m.payload.count == size else { throw .badSize(request: request.name, got: m.payload.count, expected: "\(size)") }
            guard m.fds.count == fds else { throw .badFDCount(request: request.name, got: m.fds.count, expected: fds) }
        }
        /// The payload as `P`, after the size and fd-count checks of `expect`.
        func decode<P: VhostUserPayload>(_: P.Type, fds: Int = 0) throws(VhostUserMessageError) -> P {
            try expect(size: P.size, fds: fds)
            var r = ByteReader(m.payload)
            return P(reading: &r)
        }
        switch request {
        case .getFeatures:
            try expect(size: 0)
            return U64Payload(offeredFeatures).bytes
        case .setFeatures:
            // QEMU may ack transport bits we never offered (design notes): accept them.
            let features = try decode(U64Payload.self).value
            state.withLock { $0.ackedFeatures = features }
            device.featuresNegotiated(features)
            return nil
        case .getProtocolFeatures:
            try expect(size: 0)
            return U64Payload(offeredProtocolFeatures.rawValue).bytes
        case .setProtocolFeatures:
            let wanted = VhostUserProtocolFeatures(rawValue: try decode(U64Payload.self).value)
            state.withLock { $0.ackedProtocol = wanted.intersection(offeredProtocolFeatures) }
            return nil
        case .setBackendReqFD:
            try setBackendReqFD(m)
            return nil
        case .setOwner, .resetOwner:
            try expect(size: 0)
            if request == .resetOwner { resetDevice() }
            return nil
        case .resetDevice:
            try expect(size: 0)
            resetDevice()
            return nil
        case .getQueueNum:
            try expect(size: 0)
            return U64Payload(UInt64(device.queueCount)).bytes
        case .getMaxMemSlots:
            try expect(size: 0)
            return U64Payload(UInt64(Self.maxMemorySlots)).bytes
        case .setMemTable:
            try setMemTable(m)
            return nil
        case .addMemReg:
            let r = try decode(SingleMemoryRegionPayload.self, fds: 1)
            try addRegion(r.region, fd: m.fds[0], request: request)
            return nil
        case .remMemReg:
            // QEMU sends no fd here; some frontends send one. Accept either (it is closed).
            guard let r = SingleMemoryRegionPayload(decoding: m.payload), m.fds.count <= 1
            else { throw VhostUserMessageError.badSize(request: request.name, got: m.payload.count, expected: "\(SingleMemoryRegionPayload.size)") }
            try removeRegion(r.region, request: request)
            return nil
        case .setVringNum:
            let s = try decode(VringState.self)
            let i = try vringIndex(s.index, request)
            guard s.num > 0, s.num <= UInt32(device.maxQueueSize), s.num & (s.num - 1) == 0
            else { throw VhostUserMessageError.invalidPayload(request: request.name, "queue size \(s.num) (max \(device.maxQueueSize), power of two)") }
            try whileStopped(i, request) { $0.size = UInt16(s.num) }
            return nil
        case .setVringBase:
            let s = try decode(VringState.self)
            let i = try vringIndex(s.index, request)
            guard s.num <= 0xffff else { throw VhostUserMessageError.invalidPayload(request: request.name, "base \(s.num)") }
            try whileStopped(i, request) { $0.base = UInt16(s.num) }
            return nil
        case .setVringAddr:
            let a = try decode(VringAddressPayload.self)
            let i = try vringIndex(a.index, request)
            try whileStopped(i, request) {
                $0.addresses = VringAddresses(descriptorTable: .init(a.descriptor), availableRing: .init(a.available), usedRing: .init(a.used))
            }
            return nil
        case .setVringKick:
            let (i, fd) = try vringFD(m, request)
            guard let fd else { throw VhostUserMessageError.unsupported(request: "\(request.name) without an fd (polling mode)") }
            try startVring(i, kick: fd, request: request)
            return nil
        case .setVringCall:
            let (i, fd) = try vringFD(m, request)
            state.withLock { s in
                s.vrings[i].call = fd
                s.vrings[i].worker?.setCall(fd)
            }
            return nil
        case .setVringErr:
            let (i, fd) = try vringFD(m, request)
            state.withLock { $0.vrings[i].err = fd }
            return nil
        case .setVringEnable:
            let s = try decode(VringState.self)
            let i = try vringIndex(s.index, request)
            guard s.num <= 1 else { throw VhostUserMessageError.invalidPayload(request: request.name, "enable \(s.num)") }
            state.withLock { st in
                st.vrings[i].enabled = s.num == 1
                st.vrings[i].worker?.setEnabled(s.num == 1)
            }
            return nil
        case .getVringBase:
            let s = try decode(VringState.self)
            let i = try vringIndex(s.index, request)
            let base = stopVring(i)
            return VringState(index: s.index, num: UInt32(base)).bytes
        case .getConfig:
            guard let c = ConfigPayload(decoding: m.payload), m.fds.isEmpty
            else { throw VhostUserMessageError.badSize(request: request.name, got: m.payload.count, expected: ">= 12") }
            let offset = c.offset, size = c.size, flags = c.flags
            guard c.hasConsistentSize
            else { throw VhostUserMessageError.badSize(request: request.name, got: m.payload.count, expected: "12 + size (\(size) ≤ 256)") }
            guard let data = device.readConfig(offset: Int(offset), count: Int(size)), data.count == Int(size) else {
                log.log(.warning, key: "vu-config", "GET_CONFIG offset \(offset) size \(size) outside config space")
                // A zero-size reply tells the frontend the read failed (vhost-user spec).
                return ConfigPayload(offset: offset, size: 0, flags: flags, data: []).bytes
            }
            return ConfigPayload(offset: offset, size: size, flags: flags, data: data).bytes
        case .setConfig:
            guard let c = ConfigPayload(decoding: m.payload), m.fds.isEmpty
            else { throw VhostUserMessageError.badSize(request: request.name, got: m.payload.count, expected: ">= 12") }
            guard c.hasConsistentSize
            else { throw VhostUserMessageError.badSize(request: request.name, got: m.payload.count, expected: "12 + size") }
            guard device.writeConfig(offset: Int(c.offset), bytes: c.data)
            else { throw VhostUserMessageError.failed(request: request.name, "config write at \(c.offset) refused") }
            return nil
        default:
            switch try device.handleDeviceRequest(request.rawValue, payload: m.payload, fds: m.fds) {
            case .done: return nil
            case let .reply(bytes): return bytes
            }
        }
    }

    // MARK: vrings

    private func vringIndex(_ raw: UInt32, _ request: VhostUserRequest) throws(VhostUserMessageError) -> Int {
        guard raw < UInt32(device.queueCount) else { throw .invalidPayload(request: request.name, "vring \(raw) of \(device.queueCount)") }
        return Int(raw)
    }

    private func vringFD(_ m: VhostUserMessage, _ request: VhostUserRequest) throws(VhostUserMessageError) -> (Int, OwnedFileDescriptor?) {
        guard let payload = VringFDPayload(decoding: m.payload) else { throw .badSize(request: request.name, got: m.payload.count, expected: "8") }
        guard payload.reservedBits == 0
        else { throw .invalidPayload(request: request.name, "reserved bits set in 0x\(String(payload.value, radix: 16))") }
        let i = try vringIndex(payload.index, request)
        let noFD = !payload.hasFD
        guard m.fds.count == (noFD ? 0 : 1) else { throw .badFDCount(request: request.name, got: m.fds.count, expected: noFD ? 0 : 1) }
        return (i, m.fds.first)
    }

    /// Ring layout may only change while the ring is stopped.
    private func whileStopped(_ i: Int, _ request: VhostUserRequest, _ body: (inout Vring) -> Void) throws(VhostUserMessageError) {
        let running = state.withLock { s -> Bool in
            guard s.vrings[i].worker == nil else { return true }
            body(&s.vrings[i])
            return false
        }
        if running { throw .invalidPayload(request: request.name, "vring \(i) is running") }
    }

    private func startVring(_ i: Int, kick: OwnedFileDescriptor, request: VhostUserRequest) throws {
        _ = stopVring(i)
        let current = memory.current.memory
        try state.withLock { s in
            let v = s.vrings[i]
            guard v.size > 0, let addresses = v.addresses
            else { throw VhostUserMessageError.invalidPayload(request: request.name, "vring \(i) has no size or addresses") }
            let queue: SplitVirtqueue
            do {
                queue = try SplitVirtqueue(size: v.size, addresses: addresses, memory: current,
                                           eventIndex: s.ackedFeatures & VirtioFeature.ringEventIdx != 0, nextAvail: v.base)
            } catch {
                throw VhostUserMessageError.invalidPayload(request: request.name, "vring \(i): \(error)")
            }
            // Without PROTOCOL_FEATURES a ring is enabled as soon as it starts (vhost-user spec).
            let enabled = s.ackedFeatures & VirtioFeature.protocolFeatures == 0 || v.enabled
            s.vrings[i].worker = try VringWorker(index: i, queue: queue, kick: kick, call: v.call, enabled: enabled,
                                                 memory: memory, device: device, log: log)
        }
    }

    /// Stops ring `i` if running; returns its next avail index.
    private func stopVring(_ i: Int) -> UInt16 {
        guard let worker = state.withLock({ s -> VringWorker? in
            let w = s.vrings[i].worker
            s.vrings[i].worker = nil
            return w
        }) else { return state.withLock { $0.vrings[i].base } }
        device.willStopQueues()
        let base = worker.stop()
        device.didStopQueues()
        state.withLock { $0.vrings[i].base = base }
        return base
    }

    private func stopAllWorkers() {
        for i in 0..<device.queueCount { _ = stopVring(i) }
    }

    private func resetDevice() {
        stopAllWorkers()
        state.withLock { s in
            s.vrings = Array(repeating: Vring(), count: device.queueCount)
            s.ackedFeatures = 0
        }
        device.reset()
    }

    // MARK: memory

    private func setMemTable(_ m: VhostUserMessage) throws(VhostUserMessageError) {
        let name = VhostUserRequest.setMemTable.name
        let table = try MemoryTablePayload(decoding: m.payload, request: name)
        let n = table.regions.count
        guard m.fds.count == n else { throw .badFDCount(request: name, got: m.fds.count, expected: n) }
        var regions: [GuestMemoryRegion] = []
        for (region, fd) in zip(table.regions, m.fds) {
            regions.append(try map(region, fd: fd, request: name))
        }
        try publish(regions, request: name)
    }

    private func addRegion(_ r: MemoryRegionPayload, fd: OwnedFileDescriptor, request: VhostUserRequest) throws(VhostUserMessageError) {
        let existing = state.withLock { $0.regions }
        guard existing.count < Self.maxMemorySlots else { throw .invalidPayload(request: request.name, "all \(Self.maxMemorySlots) slots used") }
        try publish(existing + [try map(r, fd: fd, request: request.name)], request: request.name)
    }

    private func removeRegion(_ r: MemoryRegionPayload, request: VhostUserRequest) throws(VhostUserMessageError) {
        let existing = state.withLock { $0.regions }
        let kept = existing.filter { !($0.guestStart.raw == r.guestAddress && $0.size == r.size && $0.frontendStart.raw == r.userAddress) }
        guard kept.count < existing.count else { throw .invalidPayload(request: request.name, "no region at 0x\(String(r.guestAddress, radix: 16)) size \(r.size)") }
        try publish(kept, request: request.name)
    }

    private func map(_ r: MemoryRegionPayload, fd: OwnedFileDescriptor, request: String) throws(VhostUserMessageError) -> GuestMemoryRegion {
        let (length, overflow) = r.size.addingReportingOverflow(r.mmapOffset)
        guard r.size > 0, !overflow, length <= UInt64(Int.max) else { throw .invalidPayload(request: request, "region size \(r.size) offset \(r.mmapOffset)") }
        // A mapping past the end of its file faults (SIGBUS) on first touch: refuse a region
        // the fd cannot hold (issue 11 §3.1).
        var st = stat()
        guard fstat(fd.rawValue, &st) == 0 else { throw .failed(request: request, "fstat: errno \(errno)") }
        if st.st_mode & S_IFMT == S_IFREG, UInt64(max(st.st_size, 0)) < length {
            throw .invalidPayload(request: request, "region needs \(length) bytes (offset \(r.mmapOffset) + size \(r.size)) but its fd holds \(st.st_size)")
        }
        // A file that can still shrink (unsealed memfd, plain file) could make later accesses
        // fault: guard the mapping. QEMU's memory-backend-memfd seals by default (seal=on:
        // F_SEAL_SHRINK | F_SEAL_GROW), and such RAM needs no guard.
        let seals = vgpu_memfd_get_seals(fd.rawValue)
        let sealed = seals >= 0 && seals & vgpu_F_SEAL_SHRINK() != 0
        if !sealed && faultSignal == nil { throw .failed(request: request, "no eventfd for the SIGBUS guard of an unsealed region") }
        let mapping: SharedFileMapping
        do { mapping = try SharedFileMapping(file: fd, length: Int(length), faultSignal: sealed ? nil : faultSignal) } catch {
            throw .failed(request: request, "mmap of \(length) bytes: \(error)")
        }
        return GuestMemoryRegion(guestStart: GuestPhysicalAddress(r.guestAddress), size: r.size,
                                 frontendStart: FrontendVirtualAddress(r.userAddress), fileOffset: r.mmapOffset,
                                 hostBase: mapping.base + Int(r.mmapOffset), mapping: mapping,
                                 fileDescriptor: mapping.file.rawValue)
    }

    private func publish(_ regions: [GuestMemoryRegion], request: String) throws(VhostUserMessageError) {
        let map: GuestMemory
        do { map = try GuestMemory(regions: regions) } catch { throw .invalidPayload(request: request, "\(error)") }
        state.withLock { $0.regions = map.regions }
        memory.publish(map)
    }
}

extension VhostUserRequest {
    /// Requests whose reply is part of the protocol (sent whatever REPLY_ACK says).
    var alwaysReplies: Bool {
        switch self {
        case .getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getConfig, .getMaxMemSlots,
             .getInflightFD, .getSharedObject, .getStatus, .setDeviceStateFD, .checkDeviceState: true
        default: false
        }
    }
}

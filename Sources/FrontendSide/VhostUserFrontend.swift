import SystemPackage
import VhostUser
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// The frontend (QEMU's) side of vhost-user: sends requests to a backend and reads replies.
/// Used by the in-process end-to-end tests and by vgpu-bench to drive any vhost-user-gpu
/// backend, this one or QEMU's C one.
public final class VhostUserFrontend {
    public enum FrontendError: Error, CustomStringConvertible {
        case disconnected
        case badReply(String)
        public var description: String {
            switch self {
            case .disconnected: "backend closed the connection"
            case let .badReply(why): "bad reply: \(why)"
            }
        }
    }

    public let socket: OwnedFileDescriptor
    public private(set) var protocolFeatures: VhostUserProtocolFeatures = []

    public init(socket: OwnedFileDescriptor) { self.socket = socket }
    public convenience init(path: String) throws { self.init(socket: try UnixSocket.connect(path: path)) }

    /// Ends the session the way a frontend exit does (the backend sees EOF); the fd itself is
    /// closed when this object goes away.
    public func disconnect() { _ = Glibc.shutdown(socket.rawValue, Int32(SHUT_RDWR)) }

    // MARK: raw

    /// Sends any request (bad-input tests use odd sizes and fds).
    public func send(_ request: UInt32, payload: [UInt8] = [], fds: [Int32] = [], needReply: Bool = false) throws {
        let flags = VhostUserHeaderFlags.version | (needReply ? VhostUserHeaderFlags.needReply : 0)
        try VhostUserMessage.write(to: socket.rawValue, request: request, flags: flags, payload: payload, fds: fds)
    }

    /// Reads one reply; checks it answers `request` with flags exactly 0x5.
    public func readReply(for request: UInt32) throws -> [UInt8] {
        guard let m = try VhostUserMessage.read(from: socket.rawValue) else { throw FrontendError.disconnected }
        guard m.header.request == request else { throw FrontendError.badReply("reply to \(m.header.request), expected \(request)") }
        guard m.header.flags == VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply
        else { throw FrontendError.badReply("flags 0x\(String(m.header.flags, radix: 16))") }
        return m.payload
    }

    /// Sends a request and, when REPLY_ACK is negotiated, waits for the ack. Returns false on a failure ack.
    @discardableResult
    public func request(_ r: VhostUserRequest, payload: [UInt8] = [], fds: [Int32] = []) throws -> Bool {
        let wantAck = protocolFeatures.contains(.replyAck)
        try send(r.rawValue, payload: payload, fds: fds, needReply: wantAck)
        guard wantAck else { return true }
        return try u64(readReply(for: r.rawValue)) == 0
    }

    private func u64(_ b: [UInt8]) throws -> UInt64 {
        guard let v = U64Payload(decoding: b) else { throw FrontendError.badReply("\(b.count) bytes, expected 8") }
        return v.value
    }

    // MARK: typed requests

    public func getFeatures() throws -> UInt64 {
        try send(VhostUserRequest.getFeatures.rawValue)
        return try u64(readReply(for: VhostUserRequest.getFeatures.rawValue))
    }

    public func getProtocolFeatures() throws -> VhostUserProtocolFeatures {
        try send(VhostUserRequest.getProtocolFeatures.rawValue)
        return VhostUserProtocolFeatures(rawValue: try u64(readReply(for: VhostUserRequest.getProtocolFeatures.rawValue)))
    }

    public func setProtocolFeatures(_ f: VhostUserProtocolFeatures) throws {
        try send(VhostUserRequest.setProtocolFeatures.rawValue, payload: U64Payload(f.rawValue).bytes)
        protocolFeatures = f   // acks apply from the next request on
    }

    @discardableResult public func setFeatures(_ f: UInt64) throws -> Bool { try request(.setFeatures, payload: U64Payload(f).bytes) }
    @discardableResult public func setOwner() throws -> Bool { try request(.setOwner) }
    @discardableResult public func resetDevice() throws -> Bool { try request(.resetDevice) }

    @discardableResult public func setMemTable(_ ram: GuestRAM) throws -> Bool {
        let (table, fds) = ram.memoryTable
        return try request(.setMemTable, payload: table.bytes, fds: fds)
    }

    @discardableResult public func addMemoryRegion(_ r: MemoryRegionPayload, fd: Int32) throws -> Bool {
        try request(.addMemReg, payload: SingleMemoryRegionPayload(region: r).bytes, fds: [fd])
    }

    @discardableResult public func removeMemoryRegion(_ r: MemoryRegionPayload) throws -> Bool {
        try request(.remMemReg, payload: SingleMemoryRegionPayload(region: r).bytes)
    }

    @discardableResult public func setVringNum(_ i: UInt32, _ n: UInt32) throws -> Bool { try request(.setVringNum, payload: VringState(index: i, num: n).bytes) }
    @discardableResult public func setVringBase(_ i: UInt32, _ n: UInt32) throws -> Bool { try request(.setVringBase, payload: VringState(index: i, num: n).bytes) }
    @discardableResult public func setVringEnable(_ i: UInt32, _ on: Bool) throws -> Bool { try request(.setVringEnable, payload: VringState(index: i, num: on ? 1 : 0).bytes) }

    @discardableResult public func setVringAddr(_ i: UInt32, _ a: VringAddressPayload) throws -> Bool {
        var a = a
        a.index = i
        return try request(.setVringAddr, payload: a.bytes)
    }

    @discardableResult public func setVringKick(_ i: UInt32, fd: Int32) throws -> Bool { try request(.setVringKick, payload: VringFDPayload(index: i).bytes, fds: [fd]) }
    @discardableResult public func setVringCall(_ i: UInt32, fd: Int32) throws -> Bool { try request(.setVringCall, payload: VringFDPayload(index: i).bytes, fds: [fd]) }

    public func getVringBase(_ i: UInt32) throws -> UInt32 {
        try send(VhostUserRequest.getVringBase.rawValue, payload: VringState(index: i, num: 0).bytes)
        let r = try readReply(for: VhostUserRequest.getVringBase.rawValue)
        guard let state = VringState(decoding: r) else { throw FrontendError.badReply("GET_VRING_BASE \(r.count) bytes") }
        return state.num
    }

    /// GET_CONFIG; returns the data (empty when the backend refused).
    public func getConfig(offset: UInt32, size: UInt32) throws -> [UInt8] {
        try send(VhostUserRequest.getConfig.rawValue, payload: ConfigPayload(offset: offset, size: size, data: Array(repeating: 0, count: Int(size))).bytes)
        let r = try readReply(for: VhostUserRequest.getConfig.rawValue)
        guard let config = ConfigPayload(decoding: r) else { throw FrontendError.badReply("GET_CONFIG \(r.count) bytes") }
        return config.data
    }

    @discardableResult public func setConfig(offset: UInt32, data: [UInt8]) throws -> Bool {
        try request(.setConfig, payload: ConfigPayload(offset: offset, size: UInt32(data.count), data: data).bytes)
    }

    /// VHOST_USER_GPU_SET_SOCKET: hands the backend its display channel.
    @discardableResult public func gpuSetSocket(_ fd: Int32) throws -> Bool { try request(.gpuSetSocket, fds: [fd]) }

    // MARK: shared objects (QEMU >= 8.2)

    /// SET_BACKEND_REQ_FD: hands the backend one end of its backend channel (the caller keeps
    /// the other end, reads the backend's requests there and acks them).
    @discardableResult public func setBackendReqFD(_ fd: Int32) throws -> Bool { try request(.setBackendReqFD, fds: [fd]) }

    /// GET_SHARED_OBJECT for a 16-byte UUID: the reply's payload and the fd it carried (nil: the
    /// backend does not know the UUID; QEMU takes a reply without an fd as failure).
    public func getSharedObject(uuid: [UInt8]) throws -> (payload: [UInt8], fd: OwnedFileDescriptor?) {
        let code = VhostUserRequest.getSharedObject.rawValue
        try send(code, payload: uuid)
        guard let m = try VhostUserMessage.read(from: socket.rawValue) else { throw FrontendError.disconnected }
        guard m.header.request == code else { throw FrontendError.badReply("reply to \(m.header.request), expected \(code)") }
        guard m.header.flags == VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply
        else { throw FrontendError.badReply("flags 0x\(String(m.header.flags, radix: 16))") }
        guard m.fds.count <= 1 else { throw FrontendError.badReply("\(m.fds.count) fds") }
        return (m.payload, m.fds.first)
    }

    // MARK: the QEMU start sequence

    /// Does what QEMU does at DRIVER_OK: features, memory table, then every queue.
    public func start(ram: GuestRAM, queues: [DriverQueue], features: UInt64? = nil,
                      protocol wanted: VhostUserProtocolFeatures = [.replyAck, .config, .configureMemSlots, .resetDevice]) throws {
        let offered = try getFeatures()
        let proto = try getProtocolFeatures()
        try setProtocolFeatures(proto.intersection(wanted))
        try setOwner()
        try check(setFeatures(features ?? offered), "SET_FEATURES")
        try check(setMemTable(ram), "SET_MEM_TABLE")
        for (i, q) in queues.enumerated() {
            let i = UInt32(i)
            try check(setVringNum(i, UInt32(q.size)), "SET_VRING_NUM")
            try check(setVringBase(i, 0), "SET_VRING_BASE")
            try check(setVringAddr(i, q.addresses), "SET_VRING_ADDR")
            try check(setVringKick(i, fd: q.kick.rawValue), "SET_VRING_KICK")
            try check(setVringCall(i, fd: q.call.rawValue), "SET_VRING_CALL")
        }
        for i in queues.indices { try check(setVringEnable(UInt32(i), true), "SET_VRING_ENABLE") }
    }

    private func check(_ ok: Bool, _ what: String) throws { if !ok { throw FrontendError.badReply("\(what) refused") } }
}

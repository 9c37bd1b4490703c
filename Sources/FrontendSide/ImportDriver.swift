import CImportWire
import VhostUser
import VirtioCore
import SystemSupport

/// The guest importer module's side of the importer device (docs/importer-protocol.md), over
/// `VhostUserFrontend`: one queue, requests built from the wire header's structs. Used by the
/// tests; it splits and misplaces buffers on demand, which the real module never does.
public final class ImportDriver {
    public let frontend: VhostUserFrontend
    public let ram: GuestRAM
    public let queue: DriverQueue
    private let requestArea: GuestPhysicalAddress
    private let responseArea: GuestPhysicalAddress
    public var timeout: Double = 5
    private var nextTag: UInt64 = 1

    /// What came back: the used length and the response (zero beyond what was written).
    public struct Reply {
        public let usedLength: UInt32
        public let response: vgpu_import_wire_resp
        public var status: UInt16 { UInt16(littleEndian: response.status) }
        public var handle: UInt32 { UInt32(littleEndian: response.handle) }
        public var digest: UInt64 { UInt64(littleEndian: response.digest) }
        public var tag: UInt64 { UInt64(littleEndian: response.tag) }
        public var sharedObjectStatus: Int32 { Int32(bitPattern: UInt32(littleEndian: response.shared_object_status)) }
        public var name: String {
            withUnsafeBytes(of: response.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        }
    }

    public enum DriverError: Error { case timeout }

    /// Starts the device the way QEMU does (queue of `queueSize`, QEMU's vhost-user-i2c uses 4).
    /// With `backendChannel`, SHARED_OBJECT is negotiated and the fd handed over (SET_BACKEND_REQ_FD).
    public init(frontend: VhostUserFrontend, ramSize: UInt64 = 16 << 20, queueSize: UInt16 = 16,
                backendChannel: OwnedFileDescriptor? = nil) throws {
        self.frontend = frontend
        ram = try GuestRAM(size: ramSize)
        queue = try DriverQueue(ram: ram, size: queueSize)
        requestArea = ram.allocate(4096, alignment: 4096)
        responseArea = ram.allocate(4096, alignment: 4096)
        var wanted: VhostUserProtocolFeatures = [.replyAck, .configureMemSlots, .resetDevice]
        if backendChannel != nil { wanted.formUnion([.backendReq, .sharedObject]) }
        try frontend.start(ram: ram, queues: [queue], protocol: wanted)
        if let backendChannel { try frontend.setBackendReqFD(backendChannel.rawValue) }
    }

    /// A request's 40 bytes.
    public static func request(type: Int32, tag: UInt64, handle: UInt32 = 0, uuid: [UInt8] = [], magic: UInt32 = VGPU_IMPORT_WIRE_MAGIC,
                               version: UInt16 = UInt16(VGPU_IMPORT_WIRE_VERSION), flags: UInt32 = 0) -> [UInt8] {
        var r = vgpu_import_wire_req()
        r.magic = magic.littleEndian
        r.version = version.littleEndian
        r.type = UInt16(truncatingIfNeeded: type).littleEndian
        r.tag = tag.littleEndian
        r.handle = handle.littleEndian
        r.flags = flags.littleEndian
        withUnsafeMutableBytes(of: &r.uuid) { u in for (i, b) in uuid.prefix(16).enumerated() { u[i] = b } }
        return withUnsafeBytes(of: r) { Array($0) }
    }

    public func identify() throws -> Reply { try send(type: VGPU_IMPORT_REQ_IDENTIFY) }
    public func importUUID(_ uuid: [UInt8]) throws -> Reply { try send(type: VGPU_IMPORT_REQ_IMPORT, uuid: uuid) }
    public func query(_ handle: UInt32) throws -> Reply { try send(type: VGPU_IMPORT_REQ_QUERY, handle: handle) }
    public func release(_ handle: UInt32) throws -> Reply { try send(type: VGPU_IMPORT_REQ_RELEASE, handle: handle) }

    private func send(type: Int32, handle: UInt32 = 0, uuid: [UInt8] = []) throws -> Reply {
        let tag = nextTag
        nextTag += 1
        return try submit(Self.request(type: type, tag: tag, handle: handle, uuid: uuid))
    }

    /// Places `request` and a response buffer of `responseSize` bytes, each split into pieces of
    /// the given sizes (the rest in a last piece), direct or in one indirect table; `readableAfter`
    /// puts a readable piece after the writable part (a malformed chain). Waits for the answer.
    public func submit(_ request: [UInt8], requestPieces: [Int] = [], responseSize: Int = Int(VGPU_IMPORT_WIRE_RESP_SIZE),
                       responsePieces: [Int] = [], indirect: Bool = false, readableAfter: Bool = false) throws -> Reply {
        ram.write(request, at: requestArea)
        ram.pointer(responseArea).initializeMemory(as: UInt8.self, repeating: 0, count: max(responseSize, 128))
        var buffers: [DriverQueue.Buffer] = []
        func pieces(_ base: GuestPhysicalAddress, _ total: Int, _ sizes: [Int], writable: Bool) {
            var done = 0
            for s in sizes where done + s <= total && s > 0 {
                buffers.append(.init(base.checkedAdd(UInt64(done))!, UInt32(s), writable: writable))
                done += s
            }
            if done < total { buffers.append(.init(base.checkedAdd(UInt64(done))!, UInt32(total - done), writable: writable)) }
        }
        pieces(requestArea, request.count, requestPieces, writable: false)
        pieces(responseArea, responseSize, responsePieces, writable: true)
        if readableAfter { buffers.append(.init(requestArea, 8, writable: false)) }
        let head = queue.add(buffers, indirect: indirect)
        queue.notifyDevice()
        let used = queue.waitUsed(timeout: timeout)
        guard let entry = used.first(where: { $0.head == head }) else { throw DriverError.timeout }
        let response = ram.pointer(responseArea).loadUnaligned(as: vgpu_import_wire_resp.self)
        return Reply(usedLength: entry.length, response: response)
    }
}

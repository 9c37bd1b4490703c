import CImportWire
import CShims
import ControlProtocol
import ControlServer
import Foundation
import ImportDevice
import Testing
import VGPUResolve
import VGPUTestSupport
import VhostUser
import FrontendSide
import VirtioCore
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// FNV-1a 64 over rows, the slow obvious way (the device's loop is in C).
func referenceDigest(_ bytes: [UInt8], rowBytes: Int, stride: Int, rows: Int, offset: Int = 0) -> UInt64 {
    var h: UInt64 = 0xcbf29ce484222325
    for r in 0..<rows { for b in bytes[(offset + r * stride)..<(offset + r * stride + rowBytes)] { h ^= UInt64(b); h = h &* 0x100000001b3 } }
    return h
}

/// The frontend's end of the importer's backend channel, answering SHARED_OBJECT_LOOKUP the
/// way `answer` says (QEMU 10.0.2: u64 -22, no fd).
final class LookupPeer: @unchecked Sendable {
    let fd: OwnedFileDescriptor
    private let lock = NSLock()
    private var lookups: [[UInt8]] = []

    init(fd: OwnedFileDescriptor, answer: @escaping @Sendable ([UInt8]) -> (status: Int64, fd: Int32?)) {
        self.fd = fd
        startThread(name: "lookup-peer") { [self] in
            while let m = try? VhostUserMessage.read(from: fd.rawValue) {
                guard m.header.request == VhostUserBackendRequest.sharedObjectLookup.rawValue else { continue }
                lock.withLock { lookups.append(m.payload) }
                let (status, found) = answer(m.payload)
                try? VhostUserMessage.write(to: fd.rawValue, request: m.header.request,
                                            flags: VhostUserHeaderFlags.version | VhostUserHeaderFlags.reply,
                                            payload: ByteWriter().u64(UInt64(bitPattern: status)).bytes, fds: found.map { [$0] } ?? [])
            }
        }
    }
    var count: Int { lock.withLock { lookups.count } }
}

/// A GPU device with a control socket, and the importer device resolving through it, both
/// served in process over real sockets and driven by the Swift frontend.
final class ImportRig {
    let directory = DeviceDirectory()
    let gpu: GPURig
    let control: ControlServer
    let device: ImportVhostUserDevice
    let driver: ImportDriver
    let peer: LookupPeer?
    private let served: ServedDevice
    private var gpuConnected = true

    init(_ name: String, maxHandles: Int = 64, lookup: Bool = false,
         answer: (@Sendable ([UInt8]) -> (status: Int64, fd: Int32?))? = nil) throws {
        gpu = try GPURig(deviceID: 3, directory: directory)
        let path = ControlSocketTests.socketPath("imp-\(name)")
        control = try ControlServer(path: path, directory: directory, logger: GPURig.logger())
        control.start()
        device = try ImportVhostUserDevice(options: ImportDeviceOptions(controlSockets: [path], sharedObjectLookup: lookup, maxHandles: maxHandles,
                                                                        holder: "import-test \(name)"),
                                           logger: GPURig.logger())
        served = try ServedDevice(device, logger: GPURig.logger(), threadName: "imp-conn")
        var channel: OwnedFileDescriptor?
        if let answer {
            let (mine, theirs) = try UnixSocket.pair()
            peer = LookupPeer(fd: mine, answer: answer)
            channel = theirs
        } else {
            peer = nil
        }
        driver = try ImportDriver(frontend: VhostUserFrontend(socket: served.frontendSocket), backendChannel: channel)
    }

    /// A resource made, attached, transferred and UUID-assigned on the GPU side.
    func exported(id: UInt32, width: UInt32, height: UInt32, seed: UInt32 = 0) throws -> (uuid: [UInt8], pixels: [UInt8]) {
        let pixels = pixelPattern(Int(width), Int(height), seed: seed)
        _ = try gpu.makeResource(id: id, width: width, height: height, pixels: pixels)
        return (try #require(try gpu.driver.assignUUID(id: id).resourceUUID), pixels)
    }

    func holders() throws -> [[ResourceHolder]] {
        let client = try ControlClient(path: control.path)
        return (try client.call(.list).0.devices ?? []).flatMap { $0.resources.map { $0.holders ?? [] } }
    }

    /// The GPU device's frontend leaves.
    func disconnectGPU() -> Bool {
        gpuConnected = false
        return gpu.disconnect()
    }

    func close() {
        driver.frontend.disconnect()
        _ = served.waitFinished(timeout: 5)
        device.shutdown()
        control.stop()
        if gpuConnected { _ = gpu.disconnect() }
    }
}

let XR24: UInt32 = 0x3432_5258

@Suite(.serialized) struct ImportDeviceTests {
    @Test func importQueryAndReleaseFollowTheGuestsPixels() throws {
        let rig = try ImportRig("lifecycle")
        defer { rig.close() }
        let id = try rig.driver.identify()
        #expect(id.usedLength == 128 && id.status == 0 && id.name == "vgpu-import-device")
        #expect(UInt32(littleEndian: id.response.max_handles) == 64)
        #expect(UInt32(littleEndian: id.response.magic) == VGPU_IMPORT_WIRE_MAGIC)

        let (uuid, pixels) = try rig.exported(id: 7, width: 33, height: 17)
        let r = try rig.driver.importUUID(uuid)
        #expect(r.usedLength == 128)
        #expect(r.status == UInt16(VGPU_IMPORT_STATUS_OK))
        #expect(r.handle != 0)
        let p = r.response
        #expect(UInt32(littleEndian: p.device) == 3 && UInt32(littleEndian: p.resource_id) == 7)
        #expect(UInt32(littleEndian: p.fourcc) == XR24)
        #expect(UInt32(littleEndian: p.width) == 33 && UInt32(littleEndian: p.height) == 17 && UInt32(littleEndian: p.stride) == 33 * 4)
        #expect(UInt32(littleEndian: p.path) == UInt32(VGPU_IMPORT_PATH_CONTROL))
        #expect(r.sharedObjectStatus == VGPU_IMPORT_SO_NOT_TRIED)
        #expect(UInt32(littleEndian: p.host_kind) == UInt32(VGPU_IMPORT_KIND_MEMFD))
        #expect(UInt32(littleEndian: p.coherency) == UInt32(VGPU_IMPORT_COHERENCY_ON_TRANSFER))
        #expect(UInt64(littleEndian: p.size) == 4096 * 1)   // 33*17*4 = 2244 bytes: one page
        #expect(r.digest == referenceDigest(pixels, rowBytes: 33 * 4, stride: 33 * 4, rows: 17))
        #expect(UInt64(littleEndian: p.device_ns) > 0)
        #expect(try rig.holders().flatMap { $0 }.map(\.holder) == ["import-test lifecycle"])
        #expect(try rig.holders().flatMap { $0 }.first?.pid == getpid())

        // The guest draws again and transfers: QUERY sees the new pixels.
        let newer = pixelPattern(33, 17, seed: 99)
        let backing = rig.gpu.place(newer)
        #expect(try rig.gpu.driver.detachBacking(id: 7).type == OK)
        #expect(try rig.gpu.driver.attachBacking(id: 7, entries: [(backing, UInt32(newer.count))]).type == OK)
        #expect(try rig.gpu.driver.transferToHost2D(id: 7, rect: VirtioGPUDriver.rect(0, 0, 33, 17)).type == OK)
        let q = try rig.driver.query(r.handle)
        #expect(q.status == UInt16(VGPU_IMPORT_STATUS_OK) && q.handle == r.handle)
        #expect(q.digest == referenceDigest(newer, rowBytes: 33 * 4, stride: 33 * 4, rows: 17))
        #expect(q.digest != r.digest)

        // RELEASE: the hold goes; the handle is no longer valid.
        #expect(try rig.driver.release(r.handle).status == UInt16(VGPU_IMPORT_STATUS_OK))
        #expect(try rig.holders().flatMap { $0 }.isEmpty)
        #expect(try rig.driver.query(r.handle).status == UInt16(VGPU_IMPORT_STATUS_INVALID))
        #expect(try rig.driver.release(r.handle).status == UInt16(VGPU_IMPORT_STATUS_INVALID))
        #expect(rig.device.handleCount == 0)
    }

    @Test func unrefRevokesAtOnceAndTheWatchUnmaps() throws {
        let rig = try ImportRig("unref")
        defer { rig.close() }
        let (uuid, _) = try rig.exported(id: 1, width: 16, height: 8)
        let a = try rig.driver.importUUID(uuid)
        let b = try rig.driver.importUUID(uuid)   // a second handle on the same buffer
        #expect(a.status == 0 && b.status == 0 && a.handle != b.handle)
        #expect(try rig.holders().flatMap { $0 }.map(\.count) == [2])
        #expect(try rig.gpu.driver.unref(id: 1).type == OK)
        // The next QUERY answers REVOKED even before the watch event is seen (the old mapping still reads).
        #expect(try rig.driver.query(a.handle).status == UInt16(VGPU_IMPORT_STATUS_REVOKED))
        // The watch revokes the other one without a QUERY: unmapped, fd closed.
        let deadline = monotonicSeconds() + 3
        while rig.device.mappedCount > 0, monotonicSeconds() < deadline { usleep(5_000) }
        #expect(rig.device.mappedCount == 0)
        #expect(try rig.driver.query(b.handle).status == UInt16(VGPU_IMPORT_STATUS_REVOKED))
        #expect(try rig.holders().isEmpty)
        // A new resource with the same id is not the old one.
        _ = try rig.exported(id: 1, width: 16, height: 8)
        #expect(try rig.driver.query(a.handle).status == UInt16(VGPU_IMPORT_STATUS_REVOKED))
        #expect(try rig.driver.release(a.handle).status == 0)
        #expect(try rig.driver.release(b.handle).status == 0)
        #expect(rig.device.handleCount == 0)
    }

    @Test func gpuDeviceDisconnectRevokes() throws {
        let rig = try ImportRig("disconnect")
        defer { rig.close() }
        let (uuid, _) = try rig.exported(id: 2, width: 8, height: 8)
        let a = try rig.driver.importUUID(uuid)
        #expect(a.status == 0)
        #expect(rig.disconnectGPU())
        #expect(try rig.driver.query(a.handle).status == UInt16(VGPU_IMPORT_STATUS_REVOKED))
    }

    @Test func frontendDisconnectReleasesEveryHandle() throws {
        let rig = try ImportRig("frontend-gone")
        defer { rig.close() }
        let (uuid, _) = try rig.exported(id: 3, width: 8, height: 8)
        #expect(try rig.driver.importUUID(uuid).status == 0)
        #expect(try rig.driver.importUUID(uuid).status == 0)
        #expect(try rig.holders().flatMap { $0 }.map(\.count) == [2])
        rig.driver.frontend.disconnect()
        let deadline = monotonicSeconds() + 3
        // The holds are released on the control socket right after the handles go.
        while try rig.device.handleCount > 0 || !rig.holders().flatMap({ $0 }).isEmpty, monotonicSeconds() < deadline { usleep(5_000) }
        #expect(rig.device.handleCount == 0)
        #expect(try rig.holders().flatMap { $0 }.isEmpty)
    }

    @Test func unknownUUIDsAndHandleExhaustion() throws {
        let rig = try ImportRig("exhaust", maxHandles: 2)
        defer { rig.close() }
        #expect(UInt32(littleEndian: try rig.driver.identify().response.max_handles) == 2)
        #expect(try rig.driver.importUUID([UInt8](repeating: 0x5a, count: 16)).status == UInt16(VGPU_IMPORT_STATUS_NOT_FOUND))
        let (uuid, _) = try rig.exported(id: 4, width: 4, height: 4)
        let a = try rig.driver.importUUID(uuid), b = try rig.driver.importUUID(uuid)
        #expect(a.status == 0 && b.status == 0)
        #expect(try rig.driver.importUUID(uuid).status == UInt16(VGPU_IMPORT_STATUS_NO_HANDLES))
        #expect(try rig.driver.query(0).status == UInt16(VGPU_IMPORT_STATUS_INVALID))
        #expect(try rig.driver.query(0xFFFF_FFFF).status == UInt16(VGPU_IMPORT_STATUS_INVALID))
        #expect(try rig.driver.release(a.handle).status == 0)
        let c = try rig.driver.importUUID(uuid)
        #expect(c.status == 0 && c.handle != a.handle)   // same slot, new generation
        #expect(try rig.driver.query(a.handle).status == UInt16(VGPU_IMPORT_STATUS_INVALID))
    }

    @Test func malformedRequestsAreAnsweredWithoutHarm() throws {
        let rig = try ImportRig("malformed")
        defer { rig.close() }
        let (uuid, pixels) = try rig.exported(id: 9, width: 5, height: 3)
        let good = ImportDriver.request(type: VGPU_IMPORT_REQ_IMPORT, tag: 0xABCD, uuid: uuid)
        // Split over descriptors, direct and in an indirect table.
        for indirect in [false, true] {
            let r = try rig.driver.submit(good, requestPieces: [7, 13, 1], responsePieces: [3, 60], indirect: indirect)
            #expect(r.usedLength == 128 && r.status == 0 && r.tag == 0xABCD)
            #expect(r.digest == referenceDigest(pixels, rowBytes: 20, stride: 20, rows: 3))
            #expect(try rig.driver.release(r.handle).status == 0)
        }
        let invalid = UInt16(VGPU_IMPORT_STATUS_INVALID)
        // Too short, too long.
        var r = try rig.driver.submit(Array(good.prefix(20)))
        #expect(r.usedLength == 128 && r.status == invalid && r.tag == 0xABCD)
        r = try rig.driver.submit(good + [0, 0, 0, 0])
        #expect(r.usedLength == 128 && r.status == invalid)
        // Response buffer too small: nothing can be written.
        r = try rig.driver.submit(good, responseSize: 64)
        #expect(r.usedLength == 0)
        // Response buffer too large: answered INVALID (the wire says exactly 128).
        r = try rig.driver.submit(good, responseSize: 256)
        #expect(r.usedLength == 128 && r.status == invalid)
        // Bad magic, version, type, flags.
        for bad in [ImportDriver.request(type: VGPU_IMPORT_REQ_IMPORT, tag: 1, uuid: uuid, magic: 0x12345678),
                    ImportDriver.request(type: VGPU_IMPORT_REQ_IMPORT, tag: 1, uuid: uuid, version: 2),
                    ImportDriver.request(type: 0, tag: 1), ImportDriver.request(type: 99, tag: 1),
                    ImportDriver.request(type: VGPU_IMPORT_REQ_IMPORT, tag: 1, uuid: uuid, flags: 1)] {
            r = try rig.driver.submit(bad)
            #expect(r.usedLength == 128 && r.status == invalid && r.tag == 1)
        }
        // A readable part after the writable one: the walker rejects the chain, returned unprocessed.
        r = try rig.driver.submit(good, readableAfter: true)
        #expect(r.usedLength == 0)
        // Only a response, no request.
        r = try rig.driver.submit([])
        #expect(r.usedLength == 128 && r.status == invalid)
        // Nothing leaked a handle, and the device still answers.
        #expect(rig.device.handleCount == 0)
        #expect(try rig.driver.identify().status == 0)
    }

    @Test func sharedObjectLookupIsTriedFirst() throws {
        // QEMU 10.0.2: -22 and no fd. The control socket answers.
        do {
            let rig = try ImportRig("so-einval", lookup: true, answer: { _ in (-22, nil) })
            defer { rig.close() }
            let (uuid, _) = try rig.exported(id: 1, width: 8, height: 2)
            let r = try rig.driver.importUUID(uuid)
            #expect(r.status == 0 && r.sharedObjectStatus == -22)
            #expect(UInt32(littleEndian: r.response.path) == UInt32(VGPU_IMPORT_PATH_CONTROL))
            #expect(rig.peer?.count == 1)
        }
        // A fixed QEMU: an fd (a memfd here). Known to the control socket: its layout.
        let memfd = vgpu_memfd_create("so-object", UInt32(MFD_CLOEXEC))
        defer { close(memfd) }
        #expect(ftruncate(memfd, 8192) == 0)
        let bytes = (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(pwrite(memfd, bytes, bytes.count, 0) == bytes.count)
        let rig = try ImportRig("so-fd", lookup: true, answer: { _ in (0, memfd) })
        defer { rig.close() }
        let (uuid, _) = try rig.exported(id: 1, width: 8, height: 2)
        let r = try rig.driver.importUUID(uuid)
        #expect(r.status == 0 && r.sharedObjectStatus == 0)
        #expect(UInt32(littleEndian: r.response.path) == UInt32(VGPU_IMPORT_PATH_SHARED_OBJECT))
        #expect(UInt32(littleEndian: r.response.fourcc) == XR24 && UInt32(littleEndian: r.response.resource_id) == 1)
        #expect(r.digest == referenceDigest(bytes, rowBytes: 32, stride: 32, rows: 2))   // QEMU's fd, the control socket's layout
        #expect(try rig.holders().flatMap { $0 }.isEmpty)   // no resolve: no hold
        // Unknown to every control socket: the fd alone, digest over its whole size.
        let foreign = try rig.driver.importUUID([UInt8](repeating: 0x33, count: 16))
        #expect(foreign.status == 0 && UInt32(littleEndian: foreign.response.fourcc) == 0)
        #expect(UInt64(littleEndian: foreign.response.size) == 8192)
        #expect(foreign.digest == referenceDigest(bytes, rowBytes: 8192, stride: 8192, rows: 1))
        #expect(try rig.driver.query(foreign.handle).status == 0)   // QEMU still answers the LOOKUP
    }

    @Test func digestRowsAreBoundsChecked() {
        var bytes = [UInt8](repeating: 0, count: 64)
        for i in bytes.indices { bytes[i] = UInt8(i) }
        var out: UInt64 = 0
        // Stride padding is excluded: 3 rows of 5 bytes, 16 apart, from offset 4.
        #expect(vgpu_import_digest_rows(bytes, 64, 4, 16, 5, 3, &out) == 0)
        #expect(out == referenceDigest(bytes, rowBytes: 5, stride: 16, rows: 3, offset: 4))
        #expect(vgpu_import_digest_rows(bytes, 64, 4, 16, 16, 4, &out) == -1)          // last row ends at 68
        #expect(vgpu_import_digest_rows(bytes, 64, 0, 8, 16, 2, &out) == -1)           // rows overlap
        #expect(vgpu_import_digest_rows(bytes, 64, 0, UInt64.max / 2, 1, 3, &out) == -1)
        #expect(vgpu_import_digest_rows(bytes, 64, UInt64.max, 1, 1, 1, &out) == -1)
        #expect(vgpu_import_digest_rows(bytes, 64, 0, 0, 0, 0, &out) == 0 && out == 0xcbf29ce484222325)
    }
}

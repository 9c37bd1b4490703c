import ControlProtocol
import ControlServer
import Foundation
import Testing
import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

@Suite struct ProtocolCodecTests {
    @Test func requestRoundTrip() throws {
        let line = ControlCodec.encodeLine(ControlRequest(id: 7, method: .show, resource: "1:3"))
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(!line.dropLast().contains(UInt8(ascii: "\n")))
        guard case let .request(r, m) = ControlCodec.decodeRequest(line.dropLast()) else { Issue.record("rejected"); return }
        #expect(r.id == 7 && r.version == 1 && r.resource == "1:3" && m == .show)
    }

    @Test func resolveCarriesItsHolderAndReleaseIsAMethod() throws {
        let line = ControlCodec.encodeLine(ControlRequest(id: 3, method: .resolve, resource: "u", holder: "imp pid 9"))
        guard case let .request(r, m) = ControlCodec.decodeRequest(line.dropLast()) else { Issue.record("rejected"); return }
        #expect(m == .resolve && r.holder == "imp pid 9")
        guard case let .request(_, m2) = ControlCodec.decodeRequest(Array(#"{"version":1,"id":4,"method":"release","resource":"u"}"#.utf8))
        else { Issue.record("release rejected"); return }
        #expect(m2 == .release)
        // Requests without a holder stay as they were (additive change).
        #expect(!String(decoding: ControlCodec.encodeLine(ControlRequest(id: 1, method: .list)), as: UTF8.self).contains("holder"))
    }

    @Test(arguments: [
        ("garbage", ControlErrorCode.badRequest, nil as Int?),
        ("[1,2]", .badRequest, nil),
        (#"{"id":4,"method":"list"}"#, .badRequest, 4),
        (#"{"version":"1","id":5,"method":"list"}"#, .badRequest, 5),
        (#"{"version":2,"id":6,"method":"list"}"#, .unsupportedVersion, 6),
        (#"{"version":1,"id":7,"method":"frob"}"#, .unknownMethod, 7),
        ("{\"version\":1,\"id\":8,\"method\":\"li\u{0}st\"}", .badRequest, nil),   // raw control char: not JSON
        (#"{"version":1,"id":9,"method":"li\u0000st"}"#, .unknownMethod, 9),
        // Every field is decoded on its own: a mistyped optional field still rejects the line,
        // and the error names the id.
        (#"{"version":1,"id":10,"method":"show","resource":5}"#, .badRequest, 10),
        (#"{"version":1,"id":11,"method":"resolve","resource":"u","holder":[1]}"#, .badRequest, 11),
        (#"{"version":1,"id":null,"method":"list"}"#, .badRequest, nil),
        (#"{"version":1,"id":12}"#, .badRequest, 12),
        ("", .badRequest, nil),
        ("{\"version\":1,\"id\":13,\"method\":\"list\",\"x\":\"a\u{1}b\"}", .badRequest, nil),   // raw control char in any field
        (#"{"version":1,"id":14,"method":"li\qst"}"#, .badRequest, 14),   // bad escape in a field that is read
    ])
    func badRequestsAreRejectedWithTheirID(line: String, code: ControlErrorCode, id: Int?) {
        guard case let .rejected(r) = ControlCodec.decodeRequest(Array(line.utf8)) else { Issue.record("accepted \(line)"); return }
        #expect(!r.ok)
        #expect(r.error?.code == code)
        #expect(r.id == id)
        #expect(r.version == ControlProtocol.version)
    }

    @Test func responseRoundTripKeepsOptionalFieldsOut() throws {
        let layout = BufferLayout(uuid: "u", device: 1, resource: 2, handleType: "memfd", format: "B8G8R8X8", fourcc: "XR24",
                                  drmFormat: DRMFourCC.code("XR24")!, width: 4, height: 2, stride: 16, offset: 0, size: 32, modifier: 0)
        let line = ControlCodec.encodeLine(ControlResponse.success(9, ControlResult(buffer: layout)))
        let text = String(decoding: line, as: UTF8.self)
        #expect(!text.contains("devices"))
        #expect(!text.contains("null"))
        let back = try ControlCodec.decodeResponse(line.dropLast())
        #expect(back.result?.buffer == layout)
        #expect(back.id == 9 && back.ok)
        let err = try ControlCodec.decodeResponse(ControlCodec.encodeLine(ControlResponse.failure(nil, ControlError(.notFound, "x"))).dropLast())
        #expect(err.error == ControlError(.notFound, "x") && err.id == nil && !err.ok)
    }

    /// The hand-written writer must give JSONEncoder's bytes (sorted keys, unescaped slashes,
    /// absent optionals left out, whole doubles without ".0"): clients and `vgpuctl --json`
    /// users see one format whichever wrote it.
    static func encoderBytes<T: Encodable>(_ value: T) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(value)) + [UInt8(ascii: "\n")]
    }

    static let oddStrings = ["", "plain", "q\"uote", "back\\slash", "a/b", "tab\tnl\ncr\r", "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
                             "caf\u{e9} \u{1F600} \u{2028}", "{\"id\":1}"]
    static let oddDoubles: [Double] = [0, -0.0, 3, 1.5, 0.1, 1e-7, 123456789.125, 1e21, 4.9e-324, 1.7976931348623157e308, -2.25]

    static func resource(_ i: Int, _ s: String, _ d: Double) -> ResourceSummary {
        ResourceSummary(device: UInt32(i), id: UInt32.max - UInt32(i), uuid: i % 2 == 0 ? s : nil, format: s, fourcc: "XR24", width: 16, height: 9,
                        stride: -i, hostBuffer: HostBufferSummary(kind: "memfd", size: Int.max - i, coherency: s, source: "guest-ram",
                                                                   exported: i % 2 == 0, shadowReason: i % 3 == 0 ? s : nil),
                        backingEntries: i, backingBytes: UInt64.max, scanouts: i % 2 == 0 ? [] : [0, 3, UInt32.max], ageSeconds: d,
                        holders: i % 3 == 1 ? nil : [ResourceHolder(holder: s, pid: Int32.min, count: i), ResourceHolder(holder: "", pid: 1, count: 0)])
    }

    @Test func handWrittenLinesAreJSONEncodersBytes() throws {
        var responses: [ControlResponse] = []
        for (i, s) in Self.oddStrings.enumerated() {
            for (j, d) in Self.oddDoubles.enumerated() {
                let k = i * Self.oddDoubles.count + j
                let layout = BufferLayout(uuid: k % 2 == 0 ? s : nil, device: UInt32(k), resource: 7, handleType: s, format: s, fourcc: "AR24",
                                          drmFormat: UInt32.max, width: 1, height: 2, stride: Int.min, offset: 0, size: k, modifier: UInt64.max - UInt64(k))
                var withKind = layout
                withKind.kind = s; withKind.coherency = "zero-copy"; withKind.foreign = k % 2 == 0
                responses.append(.success(k, ControlResult(buffer: k % 2 == 0 ? layout : withKind)))
                responses.append(.success(-k, ControlResult(devices: [DeviceSummary(id: 1, label: s, connectedSeconds: d, resources: [Self.resource(k, s, d), Self.resource(k + 1, s, -d)])])))
                responses.append(.success(k, ControlResult(detail: ResourceDetail(resource: Self.resource(k, s, d), deviceLabel: s, createdAt: d,
                                                                                   guestBacking: [GuestRange(guestPhysicalAddress: "0x1000", length: 4096)]))))
                responses.append(.failure(k % 3 == 0 ? nil : k, ControlError(.unknownMethod, s)))
                responses.append(.eventLine(k, EventRecord(kind: s, device: 2, resource: k % 2 == 0 ? 5 : nil, uuid: k % 3 == 0 ? s : nil, time: d,
                                                           dropped: k % 4 == 0 ? k : nil)))
            }
        }
        responses += [.success(1, ControlResult(watching: true)), .success(2, ControlResult(released: 0)), .success(3, ControlResult()),
                      .success(4, ControlResult(devices: [])), .success(Int.min, ControlResult(released: Int.max))]
        for r in responses {
            let mine = ControlCodec.encodeLine(r), theirs = try Self.encoderBytes(r)
            #expect(mine == theirs, "\(String(decoding: mine, as: UTF8.self)) != \(String(decoding: theirs, as: UTF8.self))")
            #expect(try ControlCodec.decodeResponse(mine.dropLast()) == r)
        }
        for (i, s) in Self.oddStrings.enumerated() {
            for r in [ControlRequest(id: i, method: .resolve, resource: s, holder: s), ControlRequest(id: -i, method: .list)] {
                #expect(ControlCodec.encodeLine(r) == (try Self.encoderBytes(r)))
            }
        }
        // Not JSON numbers: JSONEncoder refuses them; the writer keeps the line valid.
        let line = ControlCodec.encodeLine(ControlResponse.eventLine(1, EventRecord(kind: "k", device: 1, time: .infinity)))
        #expect(try ControlCodec.decodeResponse(line.dropLast()).event?.time == 0)
    }
}

@Suite struct FormatTests {
    @Test func fourccsMatchDRM() {
        #expect(DRMFourCC.code("XR24") == 0x3432_5258)   // DRM_FORMAT_XRGB8888
        #expect(DRMFourCC.code("AR24") == 0x3432_5241)   // DRM_FORMAT_ARGB8888
        #expect(DRMFourCC.name(code: 0x3432_5258) == "XR24" && DRMFourCC.name(code: 0x0000_5258) == "XR??")
        #expect(PixelFormat.allCases.allSatisfy { DRMFourCC.name(code: $0.drmFourCC) == $0.drmFourCCName })
        #expect(DRMFourCC.name(for: .b8g8r8x8) == "XR24")
        #expect(DRMFourCC.name(for: .r8g8b8a8) == "AB24")
        #expect(Set(PixelFormat.allCases.map { DRMFourCC.name(for: $0) }).count == PixelFormat.allCases.count)
        for f in PixelFormat.allCases { #expect(DRMFourCC.format(named: DRMFourCC.name(for: f)) == f) }
        #expect(DRMFourCC.code("XR2") == nil && DRMFourCC.code("XR24X") == nil)
    }

    /// The client's byte offsets (ControlProtocol, by fourcc name) agree with the server's
    /// virtio formats, so `vgpuctl dump` reads every format the server names.
    @Test func clientByteOffsetsMatchTheVirtioFormats() throws {
        for f in PixelFormat.allCases {
            let o = try #require(DRMFourCC.rgbByteOffsets(named: f.drmFourCCName), "\(f)")
            #expect(o.r == f.byteOffsets.r && o.g == f.byteOffsets.g && o.b == f.byteOffsets.b, "\(f)")
        }
        #expect(DRMFourCC.rgbByteOffsets(named: "NV12") == nil)
    }

    @Test func rgbConversionHonoursByteOrder() {
        // One pixel R=0x11 G=0x22 B=0x33 in each format, plus padding to a stride of 8.
        for f in PixelFormat.allCases {
            var px = [UInt8](repeating: 0xEE, count: 8)
            let o = f.byteOffsets
            px[o.r] = 0x11; px[o.g] = 0x22; px[o.b] = 0x33
            let rgb = px.withUnsafeBytes { convertToRGB($0.baseAddress!, offsets: DRMFourCC.rgbByteOffsets(named: f.drmFourCCName)!, width: 1, height: 1, stride: 8) }
            #expect(rgb == [0x11, 0x22, 0x33], "\(f)")
        }
    }
}

@Suite struct PNGTests {
    @Test func checksumsMatchKnownValues() {
        #expect(PNG.crc32(Array("IEND".utf8)) == 0xAE42_6082)
        #expect(PNG.adler32(Array("Wikipedia".utf8)) == 0x11E6_0398)
        #expect(PNG.adler32([]) == 1)
    }

    @Test func encodesAValidStructure() throws {
        let w = 300, h = 200   // raw data > 65535 bytes: several stored blocks
        let rgb = (0..<(w * h * 3)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let png = PNG.encodeRGB(width: w, height: h, rgb: rgb)
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        // Walk the chunks, checking each CRC.
        var i = 8
        var types: [String] = []
        var idat: [UInt8] = []
        while i < png.count {
            let len = Int(png[i]) << 24 | Int(png[i + 1]) << 16 | Int(png[i + 2]) << 8 | Int(png[i + 3])
            let typed = Array(png[(i + 4)..<(i + 8 + len)])
            let crc = UInt32(png[i + 8 + len]) << 24 | UInt32(png[i + 9 + len]) << 16 | UInt32(png[i + 10 + len]) << 8 | UInt32(png[i + 11 + len])
            #expect(PNG.crc32(typed) == crc)
            let type = String(decoding: typed.prefix(4), as: UTF8.self)
            types.append(type)
            if type == "IDAT" { idat += typed.dropFirst(4) }
            i += 12 + len
        }
        #expect(types == ["IHDR", "IDAT", "IEND"])
        // Inflate the stored blocks by hand and compare with the filtered rows.
        var raw: [UInt8] = []
        var p = 2
        while true {
            let final = idat[p] & 1
            let n = Int(idat[p + 1]) | Int(idat[p + 2]) << 8
            let nn = Int(idat[p + 3]) | Int(idat[p + 4]) << 8
            #expect(n ^ nn == 0xFFFF)
            raw += idat[(p + 5)..<(p + 5 + n)]
            p += 5 + n
            if final == 1 { break }
        }
        #expect(raw.count == h * (w * 3 + 1))
        #expect(Array(raw[1..<(1 + w * 3)]) == Array(rgb[0..<(w * 3)]))
        let adler = UInt32(idat[p]) << 24 | UInt32(idat[p + 1]) << 16 | UInt32(idat[p + 2]) << 8 | UInt32(idat[p + 3])
        #expect(PNG.adler32(raw) == adler)
    }
}

@Suite struct CredentialTests {
    @Test func sameUIDOrRootOnly() {
        #expect(PeerCredentials(pid: 1, uid: 1000, gid: 1000).isAllowed(serverUID: 1000))
        #expect(PeerCredentials(pid: 1, uid: 0, gid: 0).isAllowed(serverUID: 1000))
        #expect(!PeerCredentials(pid: 1, uid: 1001, gid: 1000).isAllowed(serverUID: 1000))
        #expect(!PeerCredentials(pid: 1, uid: 65534, gid: 65534).isAllowed(serverUID: 0))
    }

    @Test func readsARealPeer() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let c = try #require(PeerCredentials.of(socket: fds[0]))
        #expect(c.pid == getpid() && c.uid == getuid() && c.gid == getgid())
        #expect(PeerCredentials.of(socket: -1) == nil)
    }
}

@Suite struct SocketLocationTests {
    @Test func defaultDirectoryPrefersXDG() {
        #expect(ControlSocketLocation.defaultDirectory(environment: ["XDG_RUNTIME_DIR": "/run/user/7"]) == "/run/user/7/vgpu")
        let fallback = ControlSocketLocation.defaultDirectory(environment: [:])
        #expect(fallback == (getuid() == 0 ? "/run/vgpu" : "/tmp/vgpu-\(getuid())"))
    }

    @Test func findsOnlyLiveBackends() throws {
        let dir = NSTemporaryDirectory() + "vgpuctl-loc-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: ControlClientError.self) { try ControlSocketLocation.findSingle(in: dir) }
        _ = FileManager.default.createFile(atPath: dir + "/\(getpid()).sock", contents: nil)
        _ = FileManager.default.createFile(atPath: dir + "/999999999.sock", contents: nil)   // no such pid: stale
        #expect(try ControlSocketLocation.findSingle(in: dir) == dir + "/\(getpid()).sock")
        _ = FileManager.default.createFile(atPath: dir + "/1.sock", contents: nil)          // init is alive
        do { _ = try ControlSocketLocation.findSingle(in: dir); Issue.record("expected several") } catch {
            #expect(error.description.contains("several"))
        }
    }
}

/// Issue 11 §3.6: `vgpuctl dump` checks the server's layout before mapping (before: stride ×
/// height was trusted, could overflow and trap, and the offset was ignored in the bound).
@Suite struct DumpLayoutTests {
    func layout(width: UInt32 = 4, height: UInt32 = 2, stride: Int = 16, offset: Int = 0, size: Int = 32) -> BufferLayout {
        BufferLayout(uuid: nil, device: 1, resource: 1, handleType: "memfd", format: "B8G8R8X8_UNORM", fourcc: "XR24",
                     drmFormat: 0, width: width, height: height, stride: stride, offset: offset, size: size, modifier: 0)
    }

    @Test func honestLayoutsPass() {
        #expect(layout().unreadableReason(fileSize: 32) == nil)
        #expect(layout(offset: 8, size: 40).unreadableReason(fileSize: 4096) == nil)
        // The last row needs only its pixels.
        #expect(layout(stride: 32, size: 48).unreadableReason(fileSize: 48) == nil)
    }

    @Test func lyingLayoutsAreRefused() {
        #expect(layout(offset: 8).unreadableReason(fileSize: 32) != nil, "offset pushes the rows past size")
        #expect(layout(size: 32).unreadableReason(fileSize: 16) != nil, "size passes the fd's end (SIGBUS)")
        #expect(layout(stride: .max).unreadableReason(fileSize: .max) != nil, "stride × height overflows")
        #expect(layout(stride: 8).unreadableReason(fileSize: 32) != nil, "stride shorter than a row")
        #expect(layout(offset: -4).unreadableReason(fileSize: 32) != nil)
        #expect(layout(width: 0).unreadableReason(fileSize: 32) != nil)
        #expect(layout(offset: .max).unreadableReason(fileSize: .max) != nil)
    }
}

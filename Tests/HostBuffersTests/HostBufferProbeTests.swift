import Foundation
import HostBuffers
import SystemPackage
import Testing
import VGPUTestSupport

/// The check-host probes on this host, and their unavailable and failed paths made on purpose.
@Suite struct HostBufferProbeTests {
    @Test func memfdWorksEverywhere() {
        let r = HostBufferProbe.probe(.memfd)
        guard case let .available(detail) = r.status else { Issue.record("memfd: \(r.status)"); return }
        #expect(detail.contains("sealed"))
    }

    /// udmabuf and dma-heap: unavailable with the missing path where the node is missing;
    /// where it exists (a 6.12 VM), not failed.
    @Test(arguments: [(HostBufferKind.udmabuf, "/dev/udmabuf"), (.dmaHeap, "/dev/dma_heap/system")])
    func deviceNodeKindsSayWhatIsMissing(kind: HostBufferKind, path: String) {
        let r = HostBufferProbe.probe(kind)
        #expect(r.kind == kind)
        if FileManager.default.fileExists(atPath: path) {
            if case .failed = r.status { Issue.record("\(kind) on a host with \(path): \(r.status)") }
        } else {
            #expect(r.status == .unavailable(reason: "\(path): No such file or directory"))
        }
    }

    @Test func drmDumbSaysWhatIsMissing() {
        let r = HostBufferProbe.probe(.drmDumb)
        if FileManager.default.fileExists(atPath: "/dev/dri") {
            if case .failed = r.status { Issue.record("drm-dumb on a host with /dev/dri: \(r.status)") }
            if case let .unavailable(reason) = r.status { #expect(reason.hasPrefix("no DRM node makes dumb buffers") || reason.contains("no card or render nodes")) }
        } else {
            #expect(r.status == .unavailable(reason: "/dev/dri: No such file or directory"))
        }
    }

    /// Paths that are not devices: missing ones are unavailable, regular files fail at the
    /// first ioctl (ENOTTY), a DRM directory without a capable node lists each refusal.
    @Test func notDevicesGiveThePreciseReason() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-hostbuf-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var paths = HostBufferProbe.Paths()
        paths.udmabuf = dir.path + "/udmabuf"
        paths.dmaHeap = dir.path + "/heap/system"
        paths.dri = dir.path + "/dri"
        #expect(HostBufferProbe.probe(.udmabuf, paths: paths).status == .unavailable(reason: "\(paths.udmabuf): No such file or directory"))
        #expect(HostBufferProbe.probe(.dmaHeap, paths: paths).status == .unavailable(reason: "\(paths.dmaHeap): No such file or directory"))
        #expect(HostBufferProbe.probe(.drmDumb, paths: paths).status == .unavailable(reason: "\(paths.dri): No such file or directory"))

        try FileManager.default.createDirectory(atPath: paths.dri, withIntermediateDirectories: true)
        #expect(HostBufferProbe.probe(.drmDumb, paths: paths).status == .unavailable(reason: "\(paths.dri): no card or render nodes"))
        for name in ["card0", "renderD128", "version"] { FileManager.default.createFile(atPath: paths.dri + "/" + name, contents: Data()) }
        #expect(HostBufferProbe.probe(.drmDumb, paths: paths).status == .unavailable(reason:
            "no DRM node makes dumb buffers: \(paths.dri)/card0: CREATE_DUMB: Inappropriate ioctl for device; \(paths.dri)/renderD128: CREATE_DUMB: Inappropriate ioctl for device"))

        FileManager.default.createFile(atPath: paths.udmabuf, contents: Data())
        try FileManager.default.createDirectory(atPath: dir.path + "/heap", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: paths.dmaHeap, contents: Data())
        #expect(HostBufferProbe.probe(.udmabuf, paths: paths).status == .failed(step: "UDMABUF_CREATE", errno: .inappropriateIOCTLForDevice))
        #expect(HostBufferProbe.probe(.dmaHeap, paths: paths).status == .failed(step: "DMA_HEAP_IOCTL_ALLOC", errno: .inappropriateIOCTLForDevice))
    }

    @Test func probesLeaveNoFileDescriptors() {
        let before = openFDSet()
        for _ in 0..<20 { _ = HostBufferProbe.probeAll() }
        #expect(fdsLeaked(since: before).isEmpty)
    }

    @Test func reportTableAndJSON() throws {
        let results = [
            HostBufferProbeResult(kind: .udmabuf, status: .unavailable(reason: "/dev/udmabuf: No such file or directory")),
            HostBufferProbeResult(kind: .dmaHeap, status: .failed(step: "DMA_HEAP_IOCTL_ALLOC", errno: .notPermitted)),
            HostBufferProbeResult(kind: .memfd, status: .available(detail: "a \"quoted\"\tdetail\u{1}")),
        ]
        let table = HostBufferReport.table(results)
        #expect(table.split(separator: "\n").map(String.init) == [
            "KIND      STATUS       DETAIL",
            "udmabuf   unavailable  /dev/udmabuf: No such file or directory",
            "dma-heap  failed       DMA_HEAP_IOCTL_ALLOC: Operation not permitted",
            "memfd     available    a \"quoted\"\tdetail\u{1}",
        ])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(HostBufferReport.json(results).utf8)) as? [String: Any])
        let entries = try #require(json["hostBuffers"] as? [[String: Any]])
        #expect(entries.map { $0["kind"] as? String } == ["udmabuf", "dma-heap", "memfd"])
        #expect(entries.map { $0["status"] as? String } == ["unavailable", "failed", "available"])
        #expect(entries[1]["step"] as? String == "DMA_HEAP_IOCTL_ALLOC" && entries[1]["errno"] as? Int == 1)
        #expect(entries[2]["detail"] as? String == "a \"quoted\"\tdetail\u{1}")
        #expect(entries.map { $0["dmabuf"] as? Bool } == [true, true, false])
        #expect(json["usable"] as? [String] == ["memfd"])
    }
}

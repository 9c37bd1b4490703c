import ArgumentParser
import CShims
import DisplayChannel
import Foundation
import VhostUser
import FrontendSide
import VirtioCore
#if canImport(Glibc)
import Glibc
#endif
import SystemSupport

/// `vgpu-hostbuffer-check [run]`: every check, in order, then the summary line.
struct RunChecks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the host buffer checks against vgpu-backend and vgpuctl (as root, on a kernel with udmabuf, dma-heaps and vgem).")

    @Option(help: "vgpu-backend to test (default: next to this program).")
    var backend: String?

    @Option(help: "vgpuctl to use (default: next to this program).")
    var vgpuctl: String?

    @Option(name: .customLong("work-root"), help: "Where to make the scratch folder for sockets and logs.")
    var workRoot = "/tmp"

    @Option(name: .customLong("only"), help: "Run only these groups (check-host, zero-copy, heap, drm); repeatable.")
    var only: [String] = []

    @Flag(name: .customLong("without-new-options"),
          help: "Start the backends without --host-buffers and --dmabuf-scanout (tries the plumbing against a backend that lacks them; the dmabuf checks then fail).")
    var withoutNewOptions = false

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let dir = ownDirectory()
        let checks = try Checks(backend: backend ?? "\(dir)/vgpu-backend", vgpuctl: vgpuctl ?? "\(dir)/vgpuctl",
                                work: WorkDirectory(root: workRoot), newOptions: !withoutNewOptions)
        let groups = only.isEmpty ? Checks.groups : only
        let start = Date()
        for g in groups {
            switch g {
            case "check-host": checks.checkHost()
            case "zero-copy": checks.zeroCopy()
            case "heap": checks.copied(group: "heap", option: "heap", kind: "dma-heap", expName: "system")
            case "drm": checks.copied(group: "drm", option: "drm", kind: "drm-dumb", expName: "drm")
            default: throw ValidationError("unknown group \(g) (groups: \(Checks.groups.joined(separator: ", ")))")
            }
        }
        checks.reporter.log(String(format: "hostbuffers: checks took %.1fs", Date().timeIntervalSince(start)))
        if checks.reporter.failed.isEmpty {
            try? FileManager.default.removeItem(atPath: checks.work.path)
        } else {
            // In a guest the folder dies with it: the logs' tails go to the serial console.
            checks.reporter.log("work folder kept (backend logs, consumer stderr): \(checks.work.path)")
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: checks.work.path)) ?? [])
                .filter { $0.hasSuffix(".log") || $0.hasSuffix(".err") }.sorted()
            for f in files {
                let lines = read(checks.work.file(f)).split(separator: "\n").suffix(25)
                if lines.isEmpty { continue }
                checks.reporter.log("---- \(f), last \(lines.count) lines")
                checks.reporter.log(lines.joined(separator: "\n"))
            }
        }
        checks.reporter.summary()
    }
}

/// The checks. Names are `hostbuffers.<name>`; Tests/QEMUTests/HostBufferVMTests.swift lists them.
final class Checks {
    static let groups = ["check-host", "zero-copy", "heap", "drm"]

    let backend: String
    let vgpuctl: String
    let work: WorkDirectory
    let newOptions: Bool
    let reporter = Reporter()

    static let width = 256, height = 128
    static let frameBytes = width * height * 4   // 131072: 32 pages
    static let page = 4096

    init(backend: String, vgpuctl: String, work: WorkDirectory, newOptions: Bool) throws {
        self.backend = backend
        self.vgpuctl = vgpuctl
        self.work = work
        self.newOptions = newOptions
        for (what, path) in [("vgpu-backend", backend), ("vgpuctl", vgpuctl)] where !FileManager.default.isExecutableFile(atPath: path) {
            throw CheckError("no \(what) at \(path)")
        }
    }

    func result(_ name: String, _ ok: Bool, _ detail: String) { reporter.result(name, ok, detail) }

    // MARK: 1. check-host

    func checkHost() {
        let kinds = ["udmabuf", "dma-heap", "drm-dumb"]
        let r = runCapture(backend, ["check-host", "--json"], in: work, timeout: 120)
        guard let json = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any],
              let entries = json["hostBuffers"] as? [[String: Any]] else {
            for k in kinds { result("check-host.\(k)", false, "vgpu-backend check-host --json (status \(r.status)): \(r.out) \(r.err)") }
            return
        }
        for k in kinds {
            guard let e = entries.first(where: { $0["kind"] as? String == k }) else {
                result("check-host.\(k)", false, "no \(k) entry in check-host --json: \(r.out)")
                continue
            }
            let status = e["status"] as? String ?? "?"
            result("check-host.\(k)", status == "available", "\(status): \(e["detail"] as? String ?? "")")
        }
    }

    // MARK: vgpuctl show

    struct Shown {
        var status: Int32
        var resource: [String: Any]?
        var hostBuffer: [String: Any]?
        var text: String
        func hb(_ key: String) -> String { hostBuffer?[key] as? String ?? "" }
        /// shadowReason in hostBuffer, else in the resource row.
        var shadowReason: String { (hostBuffer?["shadowReason"] as? String) ?? (resource?["shadowReason"] as? String) ?? "" }
    }

    /// `vgpuctl --socket C show UUID --json`: `result.detail`, whose `resource.hostBuffer` says the kind.
    func show(_ session: BackendSession, _ uuid: String) -> Shown {
        let r = runCapture(vgpuctl, ["--socket", session.controlSocket, "show", uuid, "--json"], in: work)
        let json = try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        // vgpuctl prints the detail object; accept the whole result too.
        let detail = (json?["detail"] as? [String: Any]) ?? (json?["result"] as? [String: Any])?["detail"] as? [String: Any] ?? json
        let resource = detail?["resource"] as? [String: Any]
        var compact = r.out
        if let resource, let d = try? JSONSerialization.data(withJSONObject: resource["hostBuffer"] ?? [:], options: [.sortedKeys]) {
            compact = "hostBuffer " + String(decoding: d, as: UTF8.self)
        }
        return Shown(status: r.status, resource: resource, hostBuffer: resource?["hostBuffer"] as? [String: Any],
                     text: r.status == 0 ? compact : "vgpuctl show exit \(r.status): \(r.err) \(r.out)")
    }

    func consumer(_ session: BackendSession, _ uuid: String, label: String) -> ExportedConsumer {
        ExportedConsumer(vgpuctl: vgpuctl, controlSocket: session.controlSocket, uuid: uuid, work: work, label: label)
    }

    func describe(_ c: ExportedConsumer) -> String {
        "handleType \(c.string("handleType")), exp_name \(c.string("expName").isEmpty ? "-" : c.string("expName")), "
            + "name \(c.string("name").isEmpty ? "-" : c.string("name")), size \(c.number("size") ?? 0), stride \(c.number("stride") ?? 0), "
            + "offset \(c.number("offset") ?? 0), mapped \(c.mapped)" + (c.string("error").isEmpty ? "" : ", error: \(c.string("error"))")
    }

    // MARK: 2-5, 7, 8: one backend with --host-buffers auto --dmabuf-scanout on

    func zeroCopy() {
        let names = ["zero-copy.setup", "zero-copy.show", "zero-copy.export", "zero-copy.exp-name", "zero-copy.pattern1",
                     "zero-copy.pattern2", "shadow.show", "shadow.export", "shadow.before-transfer", "shadow.after-transfer",
                     "scanout", "unref.show", "unref.mapping"]
        let session: BackendSession
        do {
            session = try BackendSession(backend: backend, arguments: newOptions ? ["--host-buffers", "auto", "--dmabuf-scanout", "on"] : [],
                                         work: work, name: "auto")
        } catch {
            result("zero-copy.setup", false, "\(error)")
            reporter.failRemaining(names, "no backend session")
            return
        }
        defer { session.stop() }
        let (w, h) = (Self.width, Self.height)

        // 2. A 256x128 B8G8R8X8 resource over two page-aligned, non-adjacent guest ranges.
        let ram = session.ram
        let first = ram.allocate(12 * Self.page, alignment: Self.page)
        _ = ram.allocate(Self.page, alignment: Self.page)   // the gap: the ranges are not adjacent
        let second = ram.allocate(Self.frameBytes - 12 * Self.page, alignment: Self.page)
        let ranges = [(first, 12 * Self.page), (second, Self.frameBytes - 12 * Self.page)]
        let uuid: String
        do {
            try session.check(session.driver.createResource2D(id: 1, width: UInt32(w), height: UInt32(h)), "RESOURCE_CREATE_2D")
            try session.check(session.driver.attachBacking(id: 1, entries: ranges.map { ($0.0, UInt32($0.1)) }), "ATTACH_BACKING")
            session.writeGuest(patternBytes(width: w, height: h, seed: 1), over: ranges)   // no TRANSFER
            uuid = try session.assignUUID(1)
        } catch {
            result("zero-copy.setup", false, "\(error)")
            reporter.failRemaining(names, "resource 1 not set up")
            return
        }
        let rangeText = ranges.map { "0x\(String($0.0.raw, radix: 16))+\($0.1)" }.joined(separator: ", ")
        result("zero-copy.setup", true, "resource 1 \(w)x\(h) B8G8R8X8 over guest ranges \(rangeText) (a page apart); pattern 1 written to guest RAM, no TRANSFER; uuid \(uuid)")

        // 3. show: a udmabuf over the guest's pages.
        let shown = show(session, uuid)
        result("zero-copy.show", shown.status == 0 && shown.hb("kind") == "udmabuf" && shown.hb("coherency") == "zero-copy",
               "want kind udmabuf, coherency zero-copy; \(shown.text)")

        // 4. export to a consumer that maps it; then a guest write with no command at all.
        let zc = consumer(session, uuid, label: "zero-copy")
        defer { zc.finish() }
        if let e = zc.startError {
            for n in ["zero-copy.export", "zero-copy.exp-name", "zero-copy.pattern1", "zero-copy.pattern2"] { result(n, false, "vgpuctl export --exec: \(e)") }
        } else {
            result("zero-copy.export", zc.string("handleType") == "dmabuf", "want handleType dmabuf; \(describe(zc))")
            result("zero-copy.exp-name", zc.string("expName") == "udmabuf", "want /proc/self/fdinfo exp_name udmabuf; \(describe(zc))")
            let p1 = zc.ask("EXPECT 1")
            result("zero-copy.pattern1", p1.ok, p1.detail)
            session.writeGuest(patternBytes(width: w, height: h, seed: 2), over: ranges)   // no command: zero copy or nothing
            let p2 = zc.ask("EXPECT 2")
            result("zero-copy.pattern2", p2.ok, (p2.ok ? "guest RAM rewritten with pattern 2, no command sent: " : "") + p2.detail)
        }

        // 5. A backing that starts 64 bytes into a page: a udmabuf over a shadow, updated on transfer.
        shadow(session)

        // 8. The zero-copy resource on a scanout reaches the display peer as a dmabuf.
        scanout(session, consumer: zc)

        // 7. UNREF: the UUID is gone from vgpuctl, the consumer's mapping still reads.
        do {
            try session.check(session.driver.unref(id: 1), "RESOURCE_UNREF")
            let gone = show(session, uuid)
            result("unref.show", gone.status != 0, "vgpuctl show \(uuid) after RESOURCE_UNREF: exit \(gone.status)" + (gone.status == 0 ? " (still found: \(gone.text))" : "; \(gone.text)"))
        } catch {
            result("unref.show", false, "\(error)")
        }
        let after = zc.ask("EXPECT 2")
        result("unref.mapping", after.ok, (after.ok ? "after RESOURCE_UNREF the consumer's mapping still reads: " : "") + after.detail)
    }

    func shadow(_ session: BackendSession) {
        let names = ["shadow.show", "shadow.export", "shadow.before-transfer", "shadow.after-transfer"]
        let (w, h) = (Self.width, Self.height)
        let base = session.ram.allocate(Self.frameBytes + Self.page, alignment: Self.page)
        let start = GuestPhysicalAddress(base.raw + 64)
        let ranges = [(start, Self.frameBytes)]
        let uuid: String
        do {
            try session.check(session.driver.createResource2D(id: 2, width: UInt32(w), height: UInt32(h)), "RESOURCE_CREATE_2D 2")
            try session.check(session.driver.attachBacking(id: 2, entries: [(start, UInt32(Self.frameBytes))]), "ATTACH_BACKING 2")
            uuid = try session.assignUUID(2)
        } catch {
            reporter.failRemaining(names, "resource 2 (backing at page offset 64): \(error)")
            return
        }
        let shown = show(session, uuid)
        result("shadow.show", shown.status == 0 && shown.hb("kind") == "udmabuf" && shown.hb("coherency") == "on-transfer" && !shown.shadowReason.isEmpty,
               "backing at 0x\(String(start.raw, radix: 16)) (page offset 64); want kind udmabuf, coherency on-transfer, a shadowReason; \(shown.text)")
        let c = consumer(session, uuid, label: "shadow")
        defer { c.finish() }
        if let e = c.startError {
            for n in names.dropFirst() { result(n, false, "vgpuctl export --exec: \(e)") }
        } else {
            result("shadow.export", c.string("handleType") == "dmabuf" && c.string("expName") == "udmabuf",
                   "want handleType dmabuf, exp_name udmabuf; \(describe(c))")
            session.writeGuest(patternBytes(width: w, height: h, seed: 3), over: ranges)
            let before = c.ask("EXPECT-NOT 3")
            result("shadow.before-transfer", before.ok, "pattern 3 in guest RAM, no TRANSFER yet: " + before.detail)
            do {
                try session.check(session.driver.transferToHost2D(id: 2, rect: VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))), "TRANSFER_TO_HOST_2D 2")
                let afterT = c.ask("EXPECT 3")
                result("shadow.after-transfer", afterT.ok, "after TRANSFER_TO_HOST_2D: " + afterT.detail)
            } catch {
                result("shadow.after-transfer", false, "\(error)")
            }
        }
        _ = try? session.driver.unref(id: 2)
    }

    /// SET_SCANOUT + RESOURCE_FLUSH of the zero-copy resource: the display peer must get
    /// DMABUF_SCANOUT(2) with an fd that is the exported dmabuf (same st_dev/st_ino as the one the
    /// consumer maps and has seen the guest's pixels through). This branch's DisplayChannelPeer
    /// keeps only the identity of the fd it received, not the fd, so the pixels are read through
    /// the consumer's mapping of the same dmabuf.
    func scanout(_ session: BackendSession, consumer zc: ExportedConsumer) {
        let (w, h) = (UInt32(Self.width), UInt32(Self.height))
        do {
            try session.check(session.driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "SET_SCANOUT")
            try session.check(session.driver.flush(id: 1, rect: VirtioGPUDriver.rect(0, 0, w, h)), "RESOURCE_FLUSH")
        } catch {
            result("scanout", false, "\(error)")
            return
        }
        // Off the scanout again afterwards, as a guest does before RESOURCE_UNREF.
        defer { _ = try? session.driver.setScanout(0, id: 0, rect: VirtioGPUDriver.rect(0, 0, 0, 0)) }
        let peer = session.peer!
        let arrived = peer.waitFor(timeout: .seconds(10)) { $0.dmabufScanouts[0]?.fileID != nil }
        let state = peer.state
        let counts = "DMABUF_SCANOUT \(state.count(.dmabufScanout)), DMABUF_SCANOUT2 \(state.count(.dmabufScanout2)), DMABUF_UPDATE \(state.count(.dmabufUpdate)), SCANOUT \(state.count(.scanout)), UPDATE \(state.count(.update))"
        guard arrived, let d = state.dmabufScanouts[0], let file = d.fileID else {
            result("scanout", false, "no DMABUF_SCANOUT(2) with an fd for scanout 0 within 10s; the peer got \(counts); errors \(state.errors)")
            return
        }
        let sameBuffer = zc.number("dev") == file.device && zc.number("ino") == file.inode
        let s = d.scanout
        let geometry = s.width == w && s.height == h && s.fdWidth == w && s.fdHeight == h && s.fdStride == UInt32(zc.number("stride") ?? 0)
        let pixels = zc.ask("EXPECT 2")
        result("scanout", sameBuffer && geometry && pixels.ok && state.errors.isEmpty,
               "\(counts); scanout \(s.width)x\(s.height) fd \(s.fdWidth)x\(s.fdHeight) stride \(s.fdStride) fourcc 0x\(String(UInt32(bitPattern: s.fourcc), radix: 16))"
                + " modifier \(d.modifier.map(String.init) ?? "-"); the fd is the exported dmabuf (dev/ino): \(sameBuffer);"
                + " its pixels (through the consumer's mapping): \(pixels.detail); peer errors \(state.errors)")
    }

    // MARK: 6. dma-heap and DRM dumb buffers: copies, updated on transfer

    func copied(group: String, option: String, kind: String, expName: String) {
        let names = ["\(group).show", "\(group).export", "\(group).content"]
        let session: BackendSession
        do {
            session = try BackendSession(backend: backend, arguments: newOptions ? ["--host-buffers", option] : [], work: work, name: group)
        } catch {
            reporter.failRemaining(names, "backend with --host-buffers \(option): \(error)")
            return
        }
        defer { session.stop() }
        let (w, h) = (Self.width, Self.height)
        let backing = session.ram.allocate(Self.frameBytes, alignment: Self.page)
        let uuid: String
        do {
            try session.check(session.driver.createResource2D(id: 1, width: UInt32(w), height: UInt32(h)), "RESOURCE_CREATE_2D")
            try session.check(session.driver.attachBacking(id: 1, entries: [(backing, UInt32(Self.frameBytes))]), "ATTACH_BACKING")
            uuid = try session.assignUUID(1)
        } catch {
            reporter.failRemaining(names, "\(error)")
            return
        }
        let shown = show(session, uuid)
        result("\(group).show", shown.status == 0 && shown.hb("kind") == kind, "--host-buffers \(option): want kind \(kind); \(shown.text)")
        let c = consumer(session, uuid, label: group)
        defer { c.finish() }
        if let e = c.startError {
            for n in names.dropFirst() { result(n, false, "vgpuctl export --exec: \(e)") }
            return
        }
        var exportOK = c.string("handleType") == "dmabuf" && c.string("expName") == expName
        var extra = ""
        if kind == "drm-dumb" {
            // PRIME exports of every DRM driver say exp_name "drm"; the only card in the guest is vgem's.
            let drivers = drmDrivers()
            exportOK = exportOK && drivers.contains { $0.hasSuffix("=vgem") }
            extra = "; DRM cards: \(drivers.isEmpty ? "none" : drivers.joined(separator: ","))"
        }
        result("\(group).export", exportOK, "want handleType dmabuf, exp_name \(expName); \(describe(c))\(extra)")
        session.writeGuest(patternBytes(width: w, height: h, seed: 5), over: [(backing, Self.frameBytes)])
        do {
            try session.check(session.driver.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, UInt32(w), UInt32(h))), "TRANSFER_TO_HOST_2D")
            let r = c.ask("EXPECT 5")
            result("\(group).content", r.ok, "after TRANSFER_TO_HOST_2D: " + r.detail)
        } catch {
            result("\(group).content", false, "\(error)")
        }
        _ = try? session.driver.unref(id: 1)
    }

    /// What each /sys/class/drm/cardN is: its driver, or (vgem's platform device has no driver
    /// link) the name of its device.
    func drmDrivers() -> [String] {
        let fm = FileManager.default
        let entries = (try? fm.contentsOfDirectory(atPath: "/sys/class/drm")) ?? []
        return entries.filter { $0.hasPrefix("card") && !$0.contains("-") }.sorted().compactMap { card in
            let base = "/sys/class/drm/\(card)/device"
            let link = (try? fm.destinationOfSymbolicLink(atPath: base + "/driver")) ?? (try? fm.destinationOfSymbolicLink(atPath: base))
            return link.map { "\(card)=\(($0 as NSString).lastPathComponent)" }
        }
    }
}

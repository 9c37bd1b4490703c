import ArgumentParser
import CShims
import DisplayChannel
import Foundation
import SystemPackage
import CImportWire
import VGPUResolve
import VhostUser
import VhostUserFrontend

/// vgpu-bench: drives any vhost-user-gpu backend (vgpu-backend, QEMU's C vhost-user-gpu) through
/// the Swift frontend and reports throughput next to the raw socket bound of the same run.
@main
struct VGPUBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpu-bench",
        abstract: "Benchmark vhost-user-gpu backends: 2D full-frame TRANSFER_TO_HOST_2D + RESOURCE_FLUSH.",
        discussion: "Each frame is a full transfer plus a flush; the flush sends the frame to the display channel, read by an in-process QEMU-like peer that counts bytes.")

    @Option(name: .customLong("backend"), parsing: .singleValue, help: "Backend binary to measure (repeatable). Default: vgpu-backend next to this binary.")
    var backends: [String] = []

    @Option(help: "Frame width.") var width: UInt32 = 1920
    @Option(help: "Frame height.") var height: UInt32 = 1080
    @Option(help: "Seconds to run each measurement.") var seconds: Double = 3
    @Option(help: "Command pairs kept in flight.") var depth: Int = 4
    @Option(help: "Per frame: transfer+flush (a guest frame), flush (display path only) or transfer (guest copy only); or resolve: UUID -> fd -> mmap -> digest through the control socket (what vgpu-import-device does per IMPORT), p50/p99 over --iterations.")
    var workload: String = VirtioGPUDriver.FrameWorkload.transferFlush.rawValue
    @Option(help: "--workload resolve: imports measured.") var iterations: Int = 200
    @Option(help: "Rounds; the bound and each backend are measured in turn every round and medians reported.") var rounds: Int = 3

    func validate() throws {
        guard (1...16384).contains(width), (1...16384).contains(height) else { throw ValidationError("--width/--height must be 1...16384") }
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard (1...64).contains(depth) else { throw ValidationError("--depth must be 1...64") }
        guard (1...50).contains(rounds) else { throw ValidationError("--rounds must be 1...50") }
        guard VirtioGPUDriver.FrameWorkload(rawValue: workload) != nil || workload == Self.resolveWorkload else {
            throw ValidationError("--workload must be one of: " + (VirtioGPUDriver.FrameWorkload.allCases.map(\.rawValue) + [Self.resolveWorkload]).joined(separator: ", "))
        }
        guard (1...1_000_000).contains(iterations) else { throw ValidationError("--iterations must be 1...1000000") }
        for b in backends where !FileManager.default.isExecutableFile(atPath: b) {
            throw ValidationError("--backend \(b): not an executable file")
        }
    }

    static let resolveWorkload = "resolve"

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let frameBytes = Int(width) * Int(height) * 4
        let list = backends.isEmpty ? [Self.defaultBackend()] : backends
        if workload == Self.resolveWorkload {
            for backend in list { try measureResolve(backend, frameBytes: frameBytes) }
            return
        }
        print("frame \(width)x\(height) XRGB8888 (\(String(format: "%.1f", Double(frameBytes) / 1e6)) MB), "
              + "\(workload), \(rounds) rounds of \(seconds) s, \(depth) frames in flight; medians")
        // Interleaved rounds: this machine's speed drifts, so each backend is compared with the
        // bound measured around it, not minutes apart.
        var bounds: [Double] = []
        var results = Array(repeating: [Double](), count: list.count)
        for _ in 0..<rounds {
            bounds.append(try measureRawSocket(frameBytes: frameBytes))
            for (i, backend) in list.enumerated() {
                do { results[i].append(try measureBackend(backend, frameBytes: frameBytes)) } catch {
                    print("\(backend): failed: \(error)")
                    throw ExitCode.failure
                }
            }
        }
        let bound = median(bounds)
        print(row("raw socketpair bound", bound, bound))
        for (i, backend) in list.enumerated() {
            print(row(URL(fileURLWithPath: backend).lastPathComponent, median(results[i]), bound))
        }
    }

    func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }

    static func defaultBackend() -> String {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        return me.deletingLastPathComponent().appendingPathComponent("vgpu-backend").path
    }

    func row(_ name: String, _ fps: Double, _ bound: Double) -> String {
        let mbps = fps * Double(width) * Double(height) * 4 / 1e6
        return name.padding(toLength: 28, withPad: " ", startingAt: 0)
            + String(format: "%8.1f frames/s  %8.0f MB/s  %5.1f %% of bound", fps, mbps, 100 * fps / bound)
    }

    /// The same bytes as a flush's UPDATE message pushed through a socketpair to the same peer.
    func measureRawSocket(frameBytes: Int) throws -> Double {
        var config = DisplayChannelPeer.Configuration()
        config.storePixels = false
        config.recordLog = false
        let (peer, fd) = try DisplayChannelPeer.connected(configuration: config)
        defer { try? fd.close(); peer.close() }
        var w = DisplayByteWriter(capacity: 32)
        DisplayMessageHeader(.update, size: UInt32(DisplayUpdateHeader.byteCount + frameBytes)).encode(into: &w)
        DisplayUpdateHeader(scanoutID: 0, rect: PixelRect(x: 0, y: 0, width: width, height: height)).encode(into: &w)
        let header = w.bytes
        let pixels = UnsafeMutableRawPointer.allocate(byteCount: frameBytes, alignment: 64)
        defer { pixels.deallocate() }
        memset(pixels, 0x5a, frameBytes)
        let start = monotonicSeconds()
        var frames = 0
        while monotonicSeconds() - start < seconds {
            try header.withUnsafeBytes { h in
                var iov = [iovec(iov_base: UnsafeMutableRawPointer(mutating: h.baseAddress!), iov_len: h.count),
                           iovec(iov_base: pixels, iov_len: frameBytes)]
                var left = h.count + frameBytes
                while left > 0 {
                    let n = writev(fd.rawValue, &iov, Int32(iov.count))
                    if n < 0 { if errno == EINTR || errno == EAGAIN { continue }; throw Errno(rawValue: errno) }
                    left -= n
                    advance(&iov, by: n)
                }
            }
            frames += 1
        }
        // Count a frame only once the peer has read it.
        _ = peer.waitFor(timeout: .seconds(10)) { $0.updateFrames >= frames }
        return Double(frames) / (monotonicSeconds() - start)
    }

    private func advance(_ iov: inout [iovec], by n: Int) {
        var n = n
        while n > 0, !iov.isEmpty {
            if n >= iov[0].iov_len { n -= iov[0].iov_len; iov.removeFirst() } else {
                iov[0].iov_base += n; iov[0].iov_len -= n; n = 0
            }
        }
    }

    /// Launches `backend --socket-path`, drives it, returns frames/s.
    func measureBackend(_ backend: String, frameBytes: Int) throws -> Double {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-bench-\(getpid())-\(Int.random(in: 0..<1_000_000))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sock = dir.appendingPathComponent("gpu.sock").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: backend)
        process.arguments = ["--socket-path", sock]
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let deadline = monotonicSeconds() + 10
        while !FileManager.default.fileExists(atPath: sock) {
            guard monotonicSeconds() < deadline, process.isRunning else { throw VhostUserFrontend.FrontendError.badReply("\(backend) did not create \(sock)") }
            usleep(10_000)
        }
        let frontend = try VhostUserFrontend(path: sock)
        let driver = try VirtioGPUDriver(frontend: frontend, ramSize: UInt64(frameBytes) + (16 << 20))
        var config = DisplayChannelPeer.Configuration()
        config.storePixels = false
        config.recordLog = false
        config.heads = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: width, height: height), enabled: true)]
        let (peer, displayFD) = try DisplayChannelPeer.connected(configuration: config)
        defer { peer.close() }
        try frontend.gpuSetSocket(displayFD.rawValue)
        try? displayFD.close()

        // One resource backed by one contiguous guest range, shown on scanout 0.
        let backing = driver.ram.allocate(frameBytes, alignment: 4096)
        memset(driver.ram.pointer(backing), 0x3c, frameBytes)
        try expectOK(driver.getDisplayInfo(), "GET_DISPLAY_INFO")
        try expectOK(driver.createResource2D(id: 1, width: width, height: height), "RESOURCE_CREATE_2D")
        try expectOK(driver.attachBacking(id: 1, entries: [(backing, UInt32(frameBytes))]), "ATTACH_BACKING")
        try expectOK(driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, width, height)), "SET_SCANOUT")

        let work = VirtioGPUDriver.FrameWorkload(rawValue: workload)!
        try driver.pumpFrames(id: 1, width: width, height: height, frames: 5, depth: depth, workload: work)   // warm-up
        let before = peer.state.updateFrames
        let start = monotonicSeconds()
        var frames = 0
        while monotonicSeconds() - start < seconds {
            try driver.pumpFrames(id: 1, width: width, height: height, frames: 10, depth: depth, workload: work)
            frames += 10
        }
        let expected = work == .transfer ? 0 : frames
        guard peer.waitFor(timeout: .seconds(10), { $0.updateFrames - before >= expected }) else {
            throw VhostUserFrontend.FrontendError.badReply("display received \(peer.state.updateFrames - before) of \(frames) frames")
        }
        return Double(frames) / (monotonicSeconds() - start)
    }

    /// Launches `backend` with a control socket, exports one XRGB frame by UUID, then times
    /// `resolve` (fd by SCM_RIGHTS) + mmap(PROT_READ) + FNV-1a digest of the visible rows +
    /// munmap, `iterations` times; each hold is released after its sample (not timed).
    func measureResolve(_ backend: String, frameBytes: Int) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-bench-\(getpid())-\(Int.random(in: 0..<1_000_000))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sock = dir.appendingPathComponent("gpu.sock").path, control = dir.appendingPathComponent("ctl.sock").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: backend)
        process.arguments = ["--socket-path", sock, "--control-socket", control]
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        defer { if process.isRunning { process.terminate(); process.waitUntilExit() } }
        let deadline = monotonicSeconds() + 10
        while !FileManager.default.fileExists(atPath: sock) || !FileManager.default.fileExists(atPath: control) {
            guard monotonicSeconds() < deadline, process.isRunning else { throw VhostUserFrontend.FrontendError.badReply("\(backend) did not create \(sock) and \(control)") }
            usleep(10_000)
        }
        let driver = try VirtioGPUDriver(frontend: try VhostUserFrontend(path: sock), ramSize: UInt64(frameBytes) + (16 << 20))
        let backing = driver.ram.allocate(frameBytes, alignment: 4096)
        let p = driver.ram.pointer(backing).assumingMemoryBound(to: UInt8.self)
        for i in 0..<frameBytes { p[i] = UInt8(truncatingIfNeeded: i &* 31 &+ i >> 12) }
        try expectOK(driver.createResource2D(id: 1, width: width, height: height), "RESOURCE_CREATE_2D")
        try expectOK(driver.attachBacking(id: 1, entries: [(backing, UInt32(frameBytes))]), "ATTACH_BACKING")
        try expectOK(driver.transferToHost2D(id: 1, rect: VirtioGPUDriver.rect(0, 0, width, height)), "TRANSFER_TO_HOST_2D")
        let assigned = try driver.assignUUID(id: 1)
        guard assigned.type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue, let u = assigned.load(virtio_gpu_resp_resource_uuid.self),
              let uuid = BufferUUID(bytes: withUnsafeBytes(of: u.uuid) { Array($0) })
        else { throw VhostUserFrontend.FrontendError.badReply("RESOURCE_ASSIGN_UUID answered 0x\(String(assigned.type, radix: 16))") }

        let client = try ResolveClient(path: control)
        var total: [Double] = [], resolveOnly: [Double] = [], digestOnly: [Double] = []
        var digest: UInt64 = 0
        for i in -5..<iterations {   // 5 warm-up rounds
            let t0 = monotonicSeconds()
            let b = try client.resolve(uuid: uuid, holder: "vgpu-bench")
            let t1 = monotonicSeconds()
            guard let m = mmap(nil, b.layout.size, PROT_READ, MAP_SHARED, b.fd.rawValue, 0), m != MAP_FAILED else { throw Errno(rawValue: errno) }
            guard vgpu_import_digest_rows(m, UInt64(b.layout.size), UInt64(b.layout.offset), UInt64(b.layout.stride),
                                          UInt64(b.layout.width) * 4, UInt64(b.layout.height), &digest) == 0
            else { throw VhostUserFrontend.FrontendError.badReply("layout does not fit its buffer") }
            munmap(m, b.layout.size)
            let t2 = monotonicSeconds()
            try client.release(uuid: uuid)
            if i >= 0 { total.append(t2 - t0); resolveOnly.append(t1 - t0); digestOnly.append(t2 - t1) }
        }
        func pct(_ v: [Double], _ q: Double) -> Double { let s = v.sorted(); return s[min(s.count - 1, Int(Double(s.count) * q))] * 1e6 }
        print("\(URL(fileURLWithPath: backend).lastPathComponent): resolve \(width)x\(height) XRGB (\(frameBytes) bytes), \(iterations) imports, digest 0x\(String(digest, radix: 16))")
        print(String(format: "  UUID -> fd -> mmap -> digest   p50 %8.1f us   p99 %8.1f us", pct(total, 0.5), pct(total, 0.99)))
        print(String(format: "    resolve (control socket)     p50 %8.1f us   p99 %8.1f us", pct(resolveOnly, 0.5), pct(resolveOnly, 0.99)))
        print(String(format: "    mmap + digest + munmap       p50 %8.1f us   p99 %8.1f us", pct(digestOnly, 0.5), pct(digestOnly, 0.99)))
    }

    func expectOK(_ r: VirtioGPUDriver.Response, _ what: String) throws {
        guard r.isOK else { throw VhostUserFrontend.FrontendError.badReply("\(what) answered 0x\(String(r.type, radix: 16))") }
    }
}

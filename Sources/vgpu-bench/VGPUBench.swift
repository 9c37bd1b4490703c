import ArgumentParser
import VirtioCore
import CShims
import DisplayChannel
import Foundation
import SystemPackage
import CImportWire
import VGPUResolve
import VhostUser
import FrontendSide
import SystemSupport

/// vgpu-bench: drives any vhost-user-gpu backend (vgpu-backend, QEMU's C vhost-user-gpu) through
/// the Swift frontend and reports throughput, CPU cost, latency and scale, each backend next to
/// the others in the same run (and frame rates next to the raw socket bound of that run).
@main
struct VGPUBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vgpu-bench",
        abstract: "Benchmark vhost-user-gpu backends: frames, CPU per frame, command latency, scale.",
        discussion: """
            Suites (--suite): frames (TRANSFER_TO_HOST_2D + RESOURCE_FLUSH of one resource, --workload), \
            latency (small commands, p50/p99), resolutions (frames from 640x480 to 3840x2160), \
            resources (RSS per resource, 1 to 10,000), devices (1, 2, 4, 8 devices at once), \
            resolve (UUID -> fd through the control socket), or all. \
            Frames are counted twice: answered (the guest's view) and displayed (UPDATEs the \
            QEMU-like display peer received); frames/s and CPU per frame use the displayed count.
            """)

    @Option(name: .customLong("backend"), parsing: .singleValue, help: "Backend binary to measure (repeatable). Default: vgpu-backend next to this binary.")
    var backends: [String] = []

    @Option(help: "Suite: frames, latency, resolutions, resources, devices, resolve, or all.") var suite: String = "frames"
    @Option(help: "Frame width.") var width: UInt32 = 1920
    @Option(help: "Frame height.") var height: UInt32 = 1080
    @Option(help: "Seconds to run each measurement.") var seconds: Double = 3
    @Option(help: "Command pairs kept in flight.") var depth: Int = 4
    @Option(help: "Frames suite: transfer+flush (a guest frame), flush (display path only), transfer (guest copy only), or all three. (resolve: same as --suite resolve.)")
    var workload: String = VirtioGPUDriver.FrameWorkload.transferFlush.rawValue
    @Option(help: "resolve and latency suites: samples per measurement.") var iterations: Int = 300
    @Option(help: "Rounds; every backend (and the bound) is measured in turn every round and medians reported.") var rounds: Int = 3
    @Option(help: "resources suite: most resources created.") var maxResources: Int = 10_000
    @Option(help: "Frames: also run each backend paced at this many frames/s (every frame displayed) for CPU per frame; 0: off.") var pace: Double = 120
    @Option(help: "Seconds of the paced run (default: --seconds).") var pacedSeconds: Double?
    @Option(help: "Write every result as JSON to this file.") var json: String?
    @Flag(help: "Latency suite: start vgpu-backend binaries with --virgl (fences then go through virglrenderer).") var virgl = false

    static let suites = ["frames", "latency", "resolutions", "resources", "devices", "resolve", "all"]

    func validate() throws {
        guard (1...16384).contains(width), (1...16384).contains(height) else { throw ValidationError("--width/--height must be 1...16384") }
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard (1...64).contains(depth) else { throw ValidationError("--depth must be 1...64") }
        guard (1...50).contains(rounds) else { throw ValidationError("--rounds must be 1...50") }
        guard Self.suites.contains(suite) else { throw ValidationError("--suite must be one of: " + Self.suites.joined(separator: ", ")) }
        guard VirtioGPUDriver.FrameWorkload(rawValue: workload) != nil || workload == Self.resolveWorkload || workload == "all" else {
            throw ValidationError("--workload must be one of: " + (VirtioGPUDriver.FrameWorkload.allCases.map(\.rawValue) + ["all", Self.resolveWorkload]).joined(separator: ", "))
        }
        guard (1...1_000_000).contains(iterations) else { throw ValidationError("--iterations must be 1...1000000") }
        guard (1...100_000).contains(maxResources) else { throw ValidationError("--max-resources must be 1...100000") }
        for b in backends where !FileManager.default.isExecutableFile(atPath: b) {
            throw ValidationError("--backend \(b): not an executable file")
        }
    }

    static let resolveWorkload = "resolve"

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let list = backends.isEmpty ? [Self.defaultBackend()] : backends
        var report: [String: Any] = [
            "date": ISO8601DateFormatter().string(from: Date()),
            "cores": ProcessInfo.processInfo.activeProcessorCount,
            "loadAverageStart": loadAverage(),
            "backends": list,
            "rounds": rounds, "seconds": seconds, "depth": depth,
        ]
        let chosen = workload == Self.resolveWorkload ? "resolve" : suite
        func wants(_ s: String) -> Bool { chosen == s || chosen == "all" }
        if wants("frames") {
            let kinds = workload == "all" || chosen == "all" ? VirtioGPUDriver.FrameWorkload.allCases
                : [VirtioGPUDriver.FrameWorkload(rawValue: workload)!]
            var out: [[String: Any]] = []
            for kind in kinds { out.append(try framesSuite(list, width: width, height: height, workload: kind)) }
            report["frames"] = out
        }
        if wants("latency") { report["latency"] = try latencySuite(list) }
        if wants("resolutions") { report["resolutions"] = try resolutionsSuite(list) }
        if wants("resources") { report["resources"] = try resourcesSuite(list) }
        if wants("devices") { report["devices"] = try devicesSuite(list) }
        if wants("resolve") {
            let frameBytes = Int(width) * Int(height) * 4
            var out: [[String: Any]] = []
            // Only vgpu-backend has a control socket (QEMU's C backend has no UUIDs to resolve).
            for backend in list where Self.isVGPU(backend) { out.append(try measureResolve(backend, frameBytes: frameBytes)) }
            report["resolve"] = out
        }
        report["loadAverageEnd"] = loadAverage()
        if let json {
            let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: json))
            print("JSON written to \(json)")
        }
    }

    static func defaultBackend() -> String {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        return me.deletingLastPathComponent().appendingPathComponent("vgpu-backend").path
    }

    static func name(_ backend: String) -> String { URL(fileURLWithPath: backend).lastPathComponent }

    /// Options only vgpu-backend has (QEMU's C backend refuses unknown options).
    static func isVGPU(_ backend: String) -> Bool { name(backend).hasPrefix("vgpu-backend") }

    // MARK: frames

    struct FrameResult {
        var answeredFPS = 0.0
        var displayedFPS = 0.0
        /// Backend CPU (user + system) per displayed frame, ms (per answered frame for `transfer`).
        var cpuMsPerFrame = 0.0
        var cpuMsPerAnswered = 0.0
        /// Paced run (--pace): backend CPU per frame, ms, and the share of frames displayed.
        var pacedCPUMsPerFrame = Double.nan
        var pacedDisplayedShare = Double.nan

        static func medians(_ v: [FrameResult]) -> FrameResult {
            FrameResult(answeredFPS: median(v.map(\.answeredFPS)), displayedFPS: median(v.map(\.displayedFPS)),
                        cpuMsPerFrame: median(v.map(\.cpuMsPerFrame)), cpuMsPerAnswered: median(v.map(\.cpuMsPerAnswered)),
                        pacedCPUMsPerFrame: median(v.map(\.pacedCPUMsPerFrame)), pacedDisplayedShare: median(v.map(\.pacedDisplayedShare)))
        }

        func json(_ name: String, bound: Double) -> [String: Any] {
            var j: [String: Any] = ["backend": name, "answeredFPS": answeredFPS, "displayedFPS": displayedFPS, "cpuMsPerFrame": cpuMsPerFrame,
                                    "cpuMsPerAnswered": cpuMsPerAnswered, "percentOfBound": bound > 0 ? 100 * displayedFPS / bound : 0]
            if !pacedCPUMsPerFrame.isNaN { j["pacedCPUMsPerFrame"] = pacedCPUMsPerFrame; j["pacedDisplayedShare"] = pacedDisplayedShare }
            return j
        }
    }

    /// Interleaved rounds: this machine's speed drifts, so each backend is compared with the
    /// bound measured around it, not minutes apart.
    func framesSuite(_ list: [String], width: UInt32, height: UInt32, workload: VirtioGPUDriver.FrameWorkload) throws -> [String: Any] {
        let frameBytes = Int(width) * Int(height) * 4
        print("\(width)x\(height) XRGB8888 (\(String(format: "%.1f", Double(frameBytes) / 1e6)) MB), \(workload.rawValue), "
              + "\(rounds) rounds of \(seconds) s, \(depth) frames in flight; medians; load \(String(format: "%.2f", loadAverage()[0]))")
        var bounds: [Double] = []
        var results = Array(repeating: [FrameResult](), count: list.count)
        for _ in 0..<rounds {
            if workload != .transfer { bounds.append(try measureRawSocket(width: width, height: height)) }
            for (i, backend) in list.enumerated() {
                results[i].append(try measureFrames(backend, width: width, height: height, workload: workload))
            }
        }
        let bound = bounds.isEmpty ? 0 : median(bounds)
        print("  " + "".padding(toLength: 26, withPad: " ", startingAt: 0)
              + "   displayed/s  % bound    answered/s   CPU ms/frame  CPU ms/answered"
              + (pace > 0 && workload != .transfer ? String(format: "  | paced %.0f/s: CPU ms/frame  displayed", pace) : ""))
        if bound > 0 {
            print("  " + "raw socketpair bound".padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: "  %10.1f  %6.1f %%", bound, 100.0))
        }
        var rows: [[String: Any]] = []
        for (i, backend) in list.enumerated() {
            let m = FrameResult.medians(results[i])
            let percent: Double = bound > 0 ? 100 * m.displayedFPS / bound : 0
            print("  " + Self.name(backend).padding(toLength: 26, withPad: " ", startingAt: 0)
                  + String(format: "  %10.1f  %6.1f %%  %10.1f  %12.3f  %14.3f", m.displayedFPS, percent,
                           m.answeredFPS, m.cpuMsPerFrame, m.cpuMsPerAnswered)
                  + (m.pacedCPUMsPerFrame.isNaN ? "" : String(format: "  |                %9.3f  %8.1f %%", m.pacedCPUMsPerFrame, 100 * m.pacedDisplayedShare)))
            rows.append(m.json(Self.name(backend), bound: bound))
        }
        return ["width": width, "height": height, "workload": workload.rawValue, "boundFPS": bound, "results": rows]
    }

    /// The same bytes as a flush's UPDATE message pushed through a socketpair to the same peer.
    func measureRawSocket(width: UInt32, height: UInt32) throws -> Double {
        let frameBytes = Int(width) * Int(height) * 4
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
                    let n: Int
                    do throws(Errno) { n = try retryingEINTR { writev(fd.rawValue, &iov, Int32(iov.count)) } } catch {
                        if error == .wouldBlock { continue }
                        throw error
                    }
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

    /// Launches `backend`, pumps frames for `seconds`, counts what the display received in that
    /// window and the backend's CPU time over it; then checks that the last frame arrives.
    func measureFrames(_ backend: String, width: UInt32, height: UInt32, workload: VirtioGPUDriver.FrameWorkload) throws -> FrameResult {
        let p = try BackendProcess(backend)
        defer { p.stop() }
        let dev = try DeviceUnderTest(socket: p.sockets[0], width: width, height: height)
        try dev.driver.pumpFrames(id: 1, width: width, height: height, frames: 5, depth: depth, workload: workload)   // warm-up
        dev.waitDisplayQuiet(quiet: 0.1)
        let d0 = dev.displayed, c0 = p.cpuSeconds, t0 = monotonicSeconds()
        let answered = try dev.pump(seconds: seconds, depth: depth, workload: workload)
        let t1 = monotonicSeconds(), c1 = p.cpuSeconds, d1 = dev.displayed
        dev.waitDisplayQuiet()
        if workload != .transfer && dev.displayed == d0 { throw BenchError("\(backend): the display received no frame") }
        let displayed = workload == .transfer ? answered : d1 - d0
        let cpu = c1 - c0
        var r = FrameResult(answeredFPS: Double(answered) / (t1 - t0), displayedFPS: Double(displayed) / (t1 - t0),
                            cpuMsPerFrame: displayed > 0 ? 1000 * cpu / Double(displayed) : .nan,
                            cpuMsPerAnswered: 1000 * cpu / Double(answered))
        if pace > 0 && workload != .transfer {
            // One frame every 1/pace s, each waited for, like a guest flipping on a vblank: the
            // display keeps up, so the CPU per frame is the cost of a displayed frame alone.
            let p0 = dev.displayed, pc0 = p.cpuSeconds, start = monotonicSeconds()
            var frames = 0
            while monotonicSeconds() - start < (pacedSeconds ?? seconds) {
                try dev.driver.pumpFrames(id: 1, width: width, height: height, frames: 1, depth: 1, workload: workload)
                frames += 1
                let next = start + Double(frames) / pace
                let wait = next - monotonicSeconds()
                if wait > 0 { usleep(UInt32(wait * 1e6)) }
            }
            dev.waitDisplayQuiet(quiet: 0.1)
            let pc1 = p.cpuSeconds
            r.pacedCPUMsPerFrame = 1000 * (pc1 - pc0) / Double(frames)
            r.pacedDisplayedShare = Double(dev.displayed - p0) / Double(frames)
        }
        return r
    }

    // MARK: latency

    /// Small commands one at a time (the driver waits for each response on its call eventfd,
    /// like a guest sleeping on the interrupt): p50 and p99 per command, every backend in turn
    /// each round.
    func latencySuite(_ list: [String]) throws -> [[String: Any]] {
        print("command round trips through the Swift frontend, \(iterations) samples x \(rounds) rounds, microseconds (cpu: backend CPU per command, mean); load \(String(format: "%.2f", loadAverage()[0]))")
        let kinds = ["GET_DISPLAY_INFO", "CREATE_2D+UNREF", "ASSIGN_UUID", "fenced no-op (RESOURCE_FLUSH, fence)"]
        var samples = Array(repeating: Array(repeating: [Double](), count: kinds.count), count: list.count)
        var unsupported = Array(repeating: Set<Int>(), count: list.count)
        var idle = Array(repeating: [Double](), count: list.count)
        // Backend CPU per command, microseconds (10 ms clock ticks: coarse for short loops).
        var cpu = Array(repeating: Array(repeating: [Double](), count: kinds.count), count: list.count)
        for _ in 0..<rounds {
            for (b, backend) in list.enumerated() {
                let p = try BackendProcess(backend, extra: virgl && Self.isVGPU(backend) ? ["--virgl"] : [])
                defer { p.stop() }
                let dev = try DeviceUnderTest(socket: p.sockets[0], width: 64, height: 64)
                let d = dev.driver
                try expectOK(d.createResource2D(id: 2, width: 64, height: 64), "RESOURCE_CREATE_2D")
                var nextID: UInt32 = 100
                for k in 0..<kinds.count {
                    var c0 = p.cpuSeconds
                    for i in -20..<iterations {   // 20 warm-up samples
                        if i == 0 { c0 = p.cpuSeconds }
                        var t: Double
                        switch k {
                        case 0:
                            let t0 = monotonicSeconds()
                            try expectOK(d.getDisplayInfo(), kinds[k])
                            t = monotonicSeconds() - t0
                        case 1:
                            nextID += 1
                            let t0 = monotonicSeconds()
                            try expectOK(d.createResource2D(id: nextID, width: 64, height: 64), "RESOURCE_CREATE_2D")
                            try expectOK(d.unref(id: nextID), "RESOURCE_UNREF")
                            t = monotonicSeconds() - t0
                        case 2:
                            // A fresh resource each time: the first ASSIGN_UUID is the real work.
                            nextID += 1
                            try expectOK(d.createResource2D(id: nextID, width: 64, height: 64), "RESOURCE_CREATE_2D")
                            let t0 = monotonicSeconds()
                            let r = try d.assignUUID(id: nextID)
                            t = monotonicSeconds() - t0
                            try expectOK(d.unref(id: nextID), "RESOURCE_UNREF")
                            if !r.isOK { unsupported[b].insert(k) }
                        default:
                            let t0 = monotonicSeconds()
                            try expectOK(d.flush(id: 2, rect: VirtioGPUDriver.rect(0, 0, 1, 1), fence: UInt64(i + 100)), kinds[k])
                            t = monotonicSeconds() - t0
                        }
                        if i >= 0 { samples[b][k].append(t * 1e6) }
                    }
                    cpu[b][k].append((p.cpuSeconds - c0) * 1e6 / Double(iterations))
                }
                // Idle: the device set up, nothing asked of it.
                let c0 = p.cpuSeconds, t0 = monotonicSeconds()
                usleep(2_000_000)
                idle[b].append(100 * (p.cpuSeconds - c0) / (monotonicSeconds() - t0))
            }
        }
        var out: [[String: Any]] = []
        print("  " + "".padding(toLength: 40, withPad: " ", startingAt: 0) + list.map { Self.name($0).padding(toLength: 33, withPad: " ", startingAt: 0) }.joined())
        for (k, kind) in kinds.enumerated() {
            var line = "  " + kind.padding(toLength: 40, withPad: " ", startingAt: 0)
            for b in list.indices {
                if unsupported[b].contains(k) {
                    line += "unsupported".padding(toLength: 33, withPad: " ", startingAt: 0)
                    out.append(["backend": Self.name(list[b]), "command": kind, "supported": false])
                    continue
                }
                let p50 = percentile(samples[b][k], 0.5), p99 = percentile(samples[b][k], 0.99)
                let c = cpu[b][k].reduce(0, +) / Double(max(1, cpu[b][k].count))
                line += String(format: "p50 %6.1f  p99 %6.1f cpu %5.0f ", p50, p99, c)
                out.append(["backend": Self.name(list[b]), "command": kind, "supported": true, "p50us": p50, "p99us": p99,
                            "cpuUsPerCommand": c])
            }
            print(line)
        }
        var line = "  " + "idle CPU (2 s, no commands)".padding(toLength: 40, withPad: " ", startingAt: 0)
        for b in list.indices {
            line += String(format: "%5.2f %%", median(idle[b])).padding(toLength: 33, withPad: " ", startingAt: 0)
            out.append(["backend": Self.name(list[b]), "command": "idle", "supported": true, "idleCPUPercent": median(idle[b])])
        }
        print(line)
        return out
    }

    // MARK: scale

    static let resolutions: [(UInt32, UInt32)] = [(640, 480), (1280, 720), (1920, 1080), (2560, 1440), (3840, 2160)]

    func resolutionsSuite(_ list: [String]) throws -> [[String: Any]] {
        try Self.resolutions.map { try framesSuite(list, width: $0.0, height: $0.1, workload: .transferFlush) }
    }

    /// RSS of the backend while 1 ... `maxResources` 64x64 resources exist, each with backing
    /// and one transfer (so its pixels are resident): growth beyond the pixels, per resource.
    func resourcesSuite(_ list: [String]) throws -> [[String: Any]] {
        let side: UInt32 = 64
        let pixelBytes = Int(side * side * 4)
        var checkpoints = [1, 10, 100, 1000, 10_000, 100_000].filter { $0 <= maxResources }
        if checkpoints.last != maxResources { checkpoints.append(maxResources) }
        print("RSS per \(side)x\(side) resource (\(pixelBytes) bytes of pixels) beyond the pixels, with backing, after one transfer each")
        var out: [[String: Any]] = []
        for backend in list {
            let p = try BackendProcess(backend, extra: Self.isVGPU(backend) ? ["--max-resources", String(maxResources + 16)] : [])
            defer { p.stop() }
            let dev = try DeviceUnderTest(socket: p.sockets[0], width: 64, height: 64)
            let d = dev.driver
            let backing = d.ram.allocate(pixelBytes, alignment: 4096)
            usleep(200_000)
            let base = p.rssBytes
            var made = 0
            var rows: [[String: Any]] = []
            var line = "  " + Self.name(backend).padding(toLength: 26, withPad: " ", startingAt: 0)
            for n in checkpoints {
                while made < n {
                    let id = UInt32(1000 + made)
                    let r = try d.createResource2D(id: id, width: side, height: side)
                    guard r.isOK else { throw BenchError("\(backend): RESOURCE_CREATE_2D #\(made + 1) answered 0x\(String(r.type, radix: 16))") }
                    try expectOK(d.attachBacking(id: id, entries: [(backing, UInt32(pixelBytes))]), "ATTACH_BACKING")
                    try expectOK(d.transferToHost2D(id: id, rect: VirtioGPUDriver.rect(0, 0, side, side)), "TRANSFER_TO_HOST_2D")
                    made += 1
                }
                let rss = p.rssBytes
                let overhead = Double(rss - base - n * pixelBytes) / Double(n)
                rows.append(["resources": n, "rssBytes": rss, "overheadBytesPerResource": overhead])
                line += String(format: "  %d: %.0f B", n, overhead)
            }
            print(line)
            out.append(["backend": Self.name(backend), "pixelBytes": pixelBytes, "baseRSSBytes": base, "points": rows])
        }
        return out
    }

    /// 1, 2, 4, 8 devices pumping frames at once: one vgpu-backend process serves them all;
    /// QEMU's C backend serves one device per process, so it runs one process per device.
    func devicesSuite(_ list: [String]) throws -> [[String: Any]] {
        print("devices at once, \(width)x\(height) transfer+flush each, \(rounds) rounds of \(seconds) s; displayed frames/s; load \(String(format: "%.2f", loadAverage()[0]))")
        var out: [[String: Any]] = []
        for n in [1, 2, 4, 8] {
            var per = Array(repeating: [[Double]](), count: list.count)
            var cpu = Array(repeating: [Double](), count: list.count)
            for _ in 0..<rounds {
                for (b, backend) in list.enumerated() {
                    let procs = try Self.isVGPU(backend) ? [BackendProcess(backend, devices: n)]
                        : (0..<n).map { _ in try BackendProcess(backend) }
                    defer { procs.forEach { $0.stop() } }
                    let sockets = procs.flatMap(\.sockets)
                    let devs = try sockets.map { try DeviceUnderTest(socket: $0, width: width, height: height) }
                    for d in devs { try d.driver.pumpFrames(id: 1, width: width, height: height, frames: 3, depth: depth, workload: .transferFlush) }
                    devs.forEach { $0.waitDisplayQuiet(quiet: 0.1) }
                    let c0 = procs.map(\.cpuSeconds).reduce(0, +)
                    let (secs, depth) = (seconds, depth)
                    let counts = try onThreads(n) { i -> (Int, Double) in
                        let d0 = devs[i].displayed, t0 = monotonicSeconds()
                        _ = try devs[i].pump(seconds: secs, depth: depth, workload: .transferFlush)
                        return (devs[i].displayed - d0, monotonicSeconds() - t0)
                    }
                    let c1 = procs.map(\.cpuSeconds).reduce(0, +)
                    let fps = counts.map { Double($0.0) / $0.1 }
                    per[b].append(fps)
                    cpu[b].append(1000 * (c1 - c0) / Double(max(1, counts.map(\.0).reduce(0, +))))
                }
            }
            var line = String(format: "  %d device%@", n, n == 1 ? " " : "s")
            for (b, backend) in list.enumerated() {
                // The round with the median aggregate.
                let sorted = per[b].sorted { $0.reduce(0, +) < $1.reduce(0, +) }
                let m = sorted[sorted.count / 2]
                let total = m.reduce(0, +)
                let fairness = (m.min() ?? 0) / max(m.max() ?? 1, 1e-9)
                let jain = total * total / (Double(m.count) * m.map { $0 * $0 }.reduce(0, +))
                line += String(format: "   %@: %7.1f frames/s (min/max %.2f) %.2f ms CPU/frame", Self.name(backend), total, fairness, median(cpu[b]))
                out.append(["backend": Self.name(backend), "devices": n, "aggregateFPS": total, "perDeviceFPS": m,
                            "minOverMax": fairness, "jainIndex": jain, "cpuMsPerFrame": median(cpu[b]),
                            "processes": Self.isVGPU(backend) ? 1 : n])
            }
            print(line)
        }
        return out
    }

    /// Launches `backend` with a control socket, exports one XRGB frame by UUID, then times
    /// `resolve` (fd by SCM_RIGHTS) + mmap(PROT_READ) + FNV-1a digest of the visible rows +
    /// munmap, `iterations` times; each hold is released after its sample (not timed).
    func measureResolve(_ backend: String, frameBytes: Int) throws -> [String: Any] {
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
              let uuid = ResourceUUID(bytes: withUnsafeBytes(of: u.uuid) { Array($0) })
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
        return ["backend": Self.name(backend), "width": width, "height": height, "iterations": iterations,
                "totalP50us": pct(total, 0.5), "totalP99us": pct(total, 0.99),
                "resolveP50us": pct(resolveOnly, 0.5), "resolveP99us": pct(resolveOnly, 0.99),
                "digestP50us": pct(digestOnly, 0.5), "digestP99us": pct(digestOnly, 0.99)]
    }

}

import DisplayChannel
import Foundation
import SystemPackage
import VhostUser
import FrontendSide
import SystemSupport

/// A backend process launched for one measurement: its socket(s), its pid, and its CPU time and
/// memory read from /proc (user + system time of every thread it ever ran, live or exited).
final class BackendProcess {
    let process: Process
    let dir: URL
    let sockets: [String]
    let control: String?
    var pid: Int32 { process.processIdentifier }
    var name: String

    /// Launches `binary` with one `--socket-path` per device (`devices` > 1 needs vgpu-backend)
    /// and waits for the sockets.
    init(_ binary: String, devices: Int = 1, control: Bool = false, extra: [String] = []) throws {
        name = URL(fileURLWithPath: binary).lastPathComponent
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vgpu-bench-\(getpid())-\(Int.random(in: 0..<1_000_000))")
        self.dir = dir
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let sockets = (0..<devices).map { dir.appendingPathComponent("gpu\($0).sock").path }
        self.sockets = sockets
        let controlPath = control ? dir.appendingPathComponent("ctl.sock").path : nil
        self.control = controlPath
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        var args: [String] = []
        for s in sockets { args += ["--socket-path", s] }
        if let c = controlPath { args += ["--control-socket", c] }
        process.arguments = args + extra
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let deadline = monotonicSeconds() + 60
        let wanted = sockets + (controlPath.map { [$0] } ?? [])
        while !wanted.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) {
            guard monotonicSeconds() < deadline, process.isRunning else {
                stop()
                throw BenchError("\(binary) did not create its sockets")
            }
            usleep(10_000)
        }
    }

    func stop() {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        try? FileManager.default.removeItem(at: dir)
    }

    deinit { stop() }

    /// User + system CPU seconds of the whole process (/proc/PID/stat fields 14 and 15).
    var cpuSeconds: Double { Self.cpuSeconds(pid: pid) }

    static func cpuSeconds(pid: Int32) -> Double {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return 0 }
        let fields = s[s.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state): utime is field 14, stime field 15.
        guard fields.count > 12, let u = Double(fields[11]), let st = Double(fields[12]) else { return 0 }
        return (u + st) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Resident memory in bytes (VmRSS: anonymous + file + shared memory such as memfds).
    var rssBytes: Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
            return kb * 1024
        }
        return 0
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// One device under test: a driver on the backend's socket and an in-process display peer.
final class DeviceUnderTest: @unchecked Sendable {
    let driver: VirtioGPUDriver
    let peer: DisplayChannelPeer
    let width: UInt32, height: UInt32
    let frameBytes: Int

    /// Connects to `socket`, gives it a display peer whose head is `width`x`height`, and sets up
    /// one resource backed by one contiguous guest range, shown on scanout 0.
    init(socket: String, width: UInt32, height: UInt32, extraRAM: UInt64 = 16 << 20) throws {
        self.width = width
        self.height = height
        frameBytes = Int(width) * Int(height) * 4
        // The socket file appears at bind(), a moment before listen(): retry a refused connect.
        var attempt = 0
        let frontend: VhostUserFrontend
        while true {
            do { frontend = try VhostUserFrontend(path: socket); break } catch {
                attempt += 1
                if attempt >= 50 { throw error }
                usleep(10_000)
            }
        }
        driver = try VirtioGPUDriver(frontend: frontend, ramSize: UInt64(frameBytes) + extraRAM)
        var config = DisplayChannelPeer.Configuration()
        config.storePixels = false
        config.recordLog = false
        config.heads = [DisplayMode(rect: PixelRect(x: 0, y: 0, width: width, height: height), enabled: true)]
        let (peer, displayFD) = try DisplayChannelPeer.connected(configuration: config)
        self.peer = peer
        try frontend.gpuSetSocket(displayFD.rawValue)
        try? displayFD.close()
        let backing = driver.ram.allocate(frameBytes, alignment: 4096)
        memset(driver.ram.pointer(backing), 0x3c, frameBytes)
        try expectOK(driver.getDisplayInfo(), "GET_DISPLAY_INFO")
        try expectOK(driver.createResource2D(id: 1, width: width, height: height), "RESOURCE_CREATE_2D")
        try expectOK(driver.attachBacking(id: 1, entries: [(backing, UInt32(frameBytes))]), "ATTACH_BACKING")
        try expectOK(driver.setScanout(0, id: 1, rect: VirtioGPUDriver.rect(0, 0, width, height)), "SET_SCANOUT")
    }

    deinit { peer.close() }

    var displayed: Int { peer.state.updateFrames }

    /// Pumps frames for `seconds`; returns the frames answered.
    func pump(seconds: Double, depth: Int, workload: VirtioGPUDriver.FrameWorkload) throws -> Int {
        let start = monotonicSeconds()
        var frames = 0
        while monotonicSeconds() - start < seconds {
            try driver.pumpFrames(id: 1, width: width, height: height, frames: 10, depth: depth, workload: workload)
            frames += 10
        }
        return frames
    }

    /// Waits until the display has received no UPDATE for `quiet` seconds (at most `timeout`).
    func waitDisplayQuiet(quiet: Double = 0.2, timeout: Double = 10) {
        let deadline = monotonicSeconds() + timeout
        var last = displayed, since = monotonicSeconds()
        while monotonicSeconds() < deadline {
            usleep(20_000)
            let now = displayed
            if now != last { last = now; since = monotonicSeconds() } else if monotonicSeconds() - since >= quiet { return }
        }
    }
}

func expectOK(_ r: VirtioGPUDriver.Response, _ what: String) throws {
    guard r.isOK else { throw BenchError("\(what) answered 0x\(String(r.type, radix: 16))") }
}

func median(_ v: [Double]) -> Double {
    guard !v.isEmpty else { return .nan }
    let s = v.sorted(); return s[s.count / 2]
}

func percentile(_ v: [Double], _ q: Double) -> Double {
    guard !v.isEmpty else { return .nan }
    let s = v.sorted(); return s[min(s.count - 1, Int(Double(s.count) * q))]
}

func loadAverage() -> [Double] {
    var l = [Double](repeating: 0, count: 3)
    _ = getloadavg(&l, 3)
    return l
}

/// Runs `body(i)` for i in 0..<n on n threads at once and waits for all.
final class ThreadResults<T>: @unchecked Sendable {
    var values: [Result<T, any Error>?]
    let lock = NSLock()
    init(_ n: Int) { values = Array(repeating: nil, count: n) }
}

func onThreads<T>(_ n: Int, _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
    let results = ThreadResults<T>(n)
    runOnThreadsAndJoin(name: "bench", count: n) { i in
        let r = Result { try body(i) }
        results.lock.lock(); results.values[i] = r; results.lock.unlock()
    }
    return try results.values.map { try $0!.get() }
}

import DisplayChannel
import Foundation
import FrontendSide
import SystemSupport
#if canImport(Glibc)
import Glibc
#endif

/// Polls `condition` every `interval` until it holds or `timeout` seconds pass; returns whether
/// it held.
@discardableResult
public func waitUntil(timeout: Double, interval: Double = 0.01, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicSeconds() + timeout
    while true {
        if try condition() { return true }
        if monotonicSeconds() >= deadline { return false }
        usleep(useconds_t(interval * 1_000_000))
    }
}

/// A product binary (vgpu-backend, vgpu-import-device) running for a test: started with its
/// arguments, then waited on until every socket it was told to serve exists.
public final class RunningBinary {
    public let process: Process

    /// Starts `executable` (its stderr to `standardError`, /dev/null by default) and waits up to
    /// `timeout` seconds for each path in `sockets` to exist.
    public init(_ executable: String, _ arguments: [String], sockets: [String], standardError: Any? = nil,
                timeout: Double = 10) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardError = standardError ?? FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        waitUntil(timeout: timeout) { sockets.allSatisfy { FileManager.default.fileExists(atPath: $0) } }
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }

    /// Waits up to `timeout` seconds for the process to exit by itself; true if it did.
    @discardableResult
    public func waitForExit(timeout: Double = 10) -> Bool {
        waitUntil(timeout: timeout, interval: 0.02) { !process.isRunning }
    }

    /// SIGTERM, `grace` seconds to exit, then SIGKILL; returns once it is gone.
    public func stop(grace: Double = 5) {
        if process.isRunning { process.terminate() }
        if !waitForExit(timeout: grace) { Glibc.kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGKILL at once; returns once it is gone.
    public func kill() {
        if process.isRunning { Glibc.kill(pid, SIGKILL) }
        process.waitUntilExit()
    }
}

/// A frontend connected to the virtio-gpu device served at `path`, with a display peer handed
/// over as QEMU does (keep the peer alive with the driver).
public func connectGPU(path: String) throws -> (VhostUserFrontend, VirtioGPUDriver, DisplayChannelPeer) {
    let frontend = try VhostUserFrontend(path: path)
    let driver = try VirtioGPUDriver(frontend: frontend)
    let (peer, fd) = try DisplayChannelPeer.connected()
    try frontend.gpuSetSocket(fd.rawValue)
    try fd.close()
    return (frontend, driver, peer)
}

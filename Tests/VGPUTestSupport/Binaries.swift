import Foundation

/// Where the products built with the tests are: next to the test binary, whatever the scratch
/// path (`VGPU_BIN_DIR` overrides).
public let testBinDir: String = {
    if let dir = ProcessInfo.processInfo.environment["VGPU_BIN_DIR"] { return dir }
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return (exe as NSString).deletingLastPathComponent
}()

/// Runs `executable` with `arguments` to completion; returns its status and both outputs.
/// The pipes are drained before waiting, so a chatty program cannot block on a full pipe.
public func runBinary(_ executable: String, _ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

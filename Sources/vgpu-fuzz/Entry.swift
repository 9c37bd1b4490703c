import Foundation
import VGPUFuzz

// libFuzzer entry points (built with `-sanitize=fuzzer`, `-D FUZZING`: scripts/fuzz). The
// target comes from VGPU_FUZZ_TARGET, read once.
nonisolated(unsafe) var selectedTarget: FuzzTarget = .gpu

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>) -> Int32 {
    let name = ProcessInfo.processInfo.environment["VGPU_FUZZ_TARGET"] ?? "gpu"
    guard let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("vgpu-fuzz: unknown target \(name) (\(FuzzTarget.allCases.map(\.rawValue)))\n".utf8))
        exit(2)
    }
    selectedTarget = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if !FUZZING
/// Without libFuzzer: `vgpu-fuzz TARGET [--repeat N] PATH...` runs each input file (or every
/// file in each directory) through TARGET once: the seed corpora and every crash found, as
/// regression tests. `--repeat N` runs them N times and prints the resident memory after passes
/// 1, 2, 4, 8, ... and the last: whether a target's memory grows with inputs, measured in a
/// plain build (the fuzz builds carry ASan's quarantine and libFuzzer's tables).
@main struct Replay {
    static func main() {
        var args = Array(CommandLine.arguments.dropFirst())
        var repeats = 1
        if let i = args.firstIndex(of: "--repeat") {
            guard i + 1 < args.count, let n = Int(args[i + 1]), n > 0 else {
                FileHandle.standardError.write(Data("vgpu-fuzz: --repeat needs a positive count\n".utf8))
                exit(2)
            }
            repeats = n
            args.removeSubrange(i...(i + 1))
        }
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: vgpu-fuzz TARGET [--repeat N] PATH...   targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
            exit(2)
        }
        var files: [String] = []
        for path in args.dropFirst() {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                FileHandle.standardError.write(Data("vgpu-fuzz: no such file or folder: \(path)\n".utf8))
                exit(2)
            }
            if isDir.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += names.sorted().map { path + "/" + $0 }
            } else {
                files.append(path)
            }
        }
        let inputs = files.compactMap { FileManager.default.contents(atPath: $0) }
        for pass in 1...repeats {
            for data in inputs { data.withUnsafeBytes { target.run($0) } }
            if repeats > 1, pass & (pass - 1) == 0 || pass == repeats {
                print("vgpu-fuzz \(name): pass \(pass), \(pass * inputs.count) inputs: \(residentMemory())")
                fflush(nil)   // all streams; a long measurement shows its progress in a log file
            }
        }
        print("vgpu-fuzz \(name): \(files.count) inputs ran\(repeats > 1 ? " \(repeats) times" : "")")
    }

    /// VmRSS and VmHWM from /proc/self/status.
    static func residentMemory() -> String {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").filter { $0.hasPrefix("VmRSS") || $0.hasPrefix("VmHWM") }
            .map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ") }.joined(separator: ", ")
    }
}
#endif

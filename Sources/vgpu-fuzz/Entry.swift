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
/// Without libFuzzer: `vgpu-fuzz TARGET PATH...` runs each input file (or every file in each
/// directory) through TARGET once: the seed corpora and every crash found, as regression tests.
@main struct Replay {
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: vgpu-fuzz TARGET PATH...   targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
            exit(2)
        }
        var files: [String] = []
        for path in args.dropFirst() {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { continue }
            if isDir.boolValue {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                files += names.sorted().map { path + "/" + $0 }
            } else {
                files.append(path)
            }
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            data.withUnsafeBytes { target.run($0) }
        }
        print("vgpu-fuzz \(name): \(files.count) inputs ran")
    }
}
#endif

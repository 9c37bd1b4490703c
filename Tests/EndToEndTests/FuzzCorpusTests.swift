import Foundation
import Testing
import VGPUTestSupport

/// Every fuzz target's seed corpus and every input a fuzz campaign found (Fuzz/regressions),
/// replayed through the plain `vgpu-fuzz` build: each must run to the end (issue 11 §1).
@Suite struct FuzzCorpusTests {
    static let fuzzDir: String = {
        // Tests/EndToEndTests/ → the package root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz").path
    }()

    @Test(arguments: ["gpu", "queue", "vhost-user", "display", "control", "virgl", "importer"])
    func corpusAndRegressionsReplay(target: String) throws {
        let paths = ["corpus", "regressions"].map { "\(Self.fuzzDir)/\($0)/\(target)" }
            .filter { FileManager.default.fileExists(atPath: $0) }
        #expect(!paths.isEmpty)
        let r = try runBinary(testBinDir + "/vgpu-fuzz", [target] + paths)
        #expect(r.status == 0, "vgpu-fuzz \(target) exited \(r.status): \(r.err.suffix(2000))")
        #expect(r.out.contains("inputs ran"))
    }

    /// `--repeat N` (the plain-build memory measurement) prints the resident memory after
    /// passes 1, 2, 4, ... and the last; bad arguments are one line and exit 2.
    @Test func repeatReportsMemoryAndBadArgumentsAreRefused() throws {
        let r = try runBinary(testBinDir + "/vgpu-fuzz", ["queue", "--repeat", "3", "\(Self.fuzzDir)/corpus/queue"])
        #expect(r.status == 0)
        let passes = r.out.split(separator: "\n").filter { $0.contains("VmRSS") }
        #expect(passes.count == 3 && passes[0].contains("pass 1,") && passes[1].contains("pass 2,") && passes[2].contains("pass 3,"))
        #expect(r.out.contains("inputs ran 3 times"))
        for args in [["queue", "--repeat", "0", "\(Self.fuzzDir)/corpus/queue"], ["queue", "--repeat"], ["queue", "/no/such/corpus"]] {
            let bad = try runBinary(testBinDir + "/vgpu-fuzz", args)
            #expect(bad.status == 2, "\(args)")
            #expect(bad.err.split(separator: "\n").count == 1 && bad.err.hasPrefix("vgpu-fuzz: "), "\(args): \(bad.err)")
        }
    }
}

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
}

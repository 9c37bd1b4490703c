import Foundation
import Testing
import VGPUTestSupport

/// `vgpu-backend check-host`, the binary built with the tests.
@Suite struct CheckHostBinaryTests {
    func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runBinary(testBinDir + "/vgpu-backend", args)
    }

    @Test func checkHostJSONParsesAndMemfdWorks() throws {
        let r = try run(["check-host", "--json"])
        #expect(r.status == 0, "\(r.err)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "\(r.out)")
        let entries = try #require(json["hostBuffers"] as? [[String: Any]])
        #expect(entries.compactMap { $0["kind"] as? String } == ["udmabuf", "dma-heap", "drm-dumb", "memfd"])
        #expect(entries.last?["status"] as? String == "available")
        let udmabuf = try #require(entries.first)
        if !FileManager.default.fileExists(atPath: "/dev/udmabuf") {
            #expect(udmabuf["status"] as? String == "unavailable")
            #expect(udmabuf["detail"] as? String == "/dev/udmabuf: No such file or directory")
        }
        #expect((json["usable"] as? [String])?.contains("memfd") == true)
    }

    @Test func checkHostTable() throws {
        let r = try run(["check-host"])
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n")
        #expect(lines.first?.hasPrefix("KIND") == true)
        #expect(lines.count == 5)
        #expect(lines.last?.hasPrefix("memfd") == true && lines.last?.contains("available") == true)
    }
}

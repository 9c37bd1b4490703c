import Foundation
@testable import QEMUHarness
import SystemSupport
import Testing

/// The harness's own pure parts: no QEMU needed.
@Suite("QEMU harness pieces")
struct HarnessUnitTests {
    @Test func ppmRoundTripAndPNGChecksums() throws {
        var image = RGBImage(width: 3, height: 2)
        image[0, 0] = RGB(255, 0, 0)
        image[2, 1] = RGB(1, 2, 3)
        let parsed = try RGBImage(ppm: Data("P6\n# comment\n3 2\n255\n".utf8) + Data(image.pixels))
        #expect(parsed == image)
        #expect(try RGBImage(ppm: image.ppmData()) == image)
        #expect(parsed.litFraction() == 2.0 / 6.0)
        #expect(parsed.boundingBox { !$0.isBlack } == PixelRect(x: 0, y: 0, width: 3, height: 2))

        // Known values: CRC-32("IEND") = 0xAE426082, Adler-32("Wikipedia") = 0x11E60398.
        #expect(PNG.crc32(Array("IEND".utf8)) == 0xae42_6082)
        #expect(PNG.adler32(Array("Wikipedia".utf8)) == 0x11e6_0398)
        let png = [UInt8](image.pngData())
        #expect(png.prefix(8) == [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
        #expect(png.suffix(12) == [0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82])
    }

    @Test func bigPNGUsesSeveralStoredBlocks() {
        let image = RGBImage(width: 200, height: 200, fill: RGB(9, 8, 7))  // 120,200 raw bytes
        let png = image.pngData()
        #expect(png.count > 120_200 && png.count < 120_200 + 200)
    }

    @Test func rejectsBadPPM() {
        #expect(throws: HarnessError.self) { try RGBImage(ppm: Data("P3\n1 1\n255\n0 0 0".utf8)) }
        #expect(throws: HarnessError.self) { try RGBImage(ppm: Data("P6\n2 2\n255\n\0\0\0".utf8)) }
    }

    @Test func parsesGuestLines() {
        #expect(GuestEvent(parsing: "VGPU-READY fbcon-text") == .ready(tag: "fbcon-text"))
        #expect(GuestEvent(parsing: "[   9.1] foo VGPU-RESULT name=x status=fail detail=no /dev/fb0 after 60s")
            == .result(ScenarioResult(name: "x", passed: false, detail: "no /dev/fb0 after 60s")))
        #expect(GuestEvent(parsing: "VGPU-MODULES loaded=10 failed=0 kernel=6.1.0-56-amd64")
            == .modules(loaded: 10, failed: 0, kernel: "6.1.0-56-amd64"))
        let console = GuestEvent(parsing: "VGPU-CONSOLE fb=virtio_gpudrmfb width=1280 height=800 rows=50 cols=160")
        guard case let .console(geometry)? = console else { Issue.record("\(String(describing: console))"); return }
        #expect(geometry.cellWidth == 8 && geometry.cellHeight == 16)
        #expect(geometry.cells(row: 2, column: 3, rows: 1, columns: 2) == PixelRect(x: 16, y: 16, width: 16, height: 16))
        #expect(GuestEvent(parsing: "VGPU-DONE") == .done)
        #expect(GuestEvent(parsing: "Power down") == nil)
    }

    @Test func kernelCommandLineAndQEMUArguments() {
        let kernel = GuestKernel(series: "6.1", version: "6.1.0-1-amd64", image: URL(fileURLWithPath: "/k"))
        var options = GuestOptions(qemu: "/q", kernel: kernel, initramfs: URL(fileURLWithPath: "/i"),
                                   backend: .qemuReference, scenario: "fbcon-smoke")
        options.maxOutputs = 2
        let args = options.qemuArguments(backendSocket: "/s/gpu", serialSocket: "/s/ser", qmpSocket: "/s/qmp")
        #expect(args.contains("vhost-user-gpu-pci,id=gpu0,chardev=vgpu,max_outputs=2"))
        #expect(args.contains("memory-backend-memfd,id=mem,size=512M,share=on"))
        #expect(args[args.firstIndex(of: "-accel")! + 1] == "tcg")
        #expect(options.kernelCommandLine.contains("vgpu.scenario=fbcon-smoke vgpu.ack=1"))
    }
}

import CShims
import DisplayChannel
import HostBuffers
import Testing
import VirtioCore
@testable import VirtioGPU
#if canImport(Glibc)
import Glibc
#endif

@Suite struct EDIDGeneratorTests {
    @Test(arguments: [(UInt32(1280), UInt32(800)), (640, 480), (1920, 1080), (3840, 2160), (4095, 4095), (1, 1), (123, 4000)])
    func validBlockWithPreferredMode(_ mode: (UInt32, UInt32)) {
        let e = EDIDGenerator.generate(width: mode.0, height: mode.1)
        #expect(e.count == 128)
        #expect(EDIDGenerator.isValidBaseBlock(e))
        #expect(EDIDTestParse.preferred(e) == (Int(mode.0), Int(mode.1)))
        let clock = EDIDTestParse.pixelClock10kHz(e)
        #expect(clock > 0 && clock <= 0xFFFF)
        #expect(EDIDTestParse.monitorName(e) == "vgpu")
        #expect(e[126] == 0)   // no extensions
    }

    @Test func oversizedAndZeroModesAreClampedOrDefaulted() {
        #expect(EDIDTestParse.preferred(EDIDGenerator.generate(width: 8192, height: 5000)) == (4095, 4095))
        #expect(EDIDTestParse.preferred(EDIDGenerator.generate(width: 0, height: 0)) == (1280, 800))
    }

    @Test func fixedFields() {
        let e = EDIDGenerator.generate(width: 1280, height: 800, serial: 0x0102_0304)
        #expect(e[18] == 1 && e[19] == 4)              // EDID 1.4
        #expect(e[20] & 0x80 != 0)                     // digital input
        #expect(Array(e[12..<16]) == [4, 3, 2, 1])     // serial, little endian
        // Manufacturer "VGP": 5-bit letters.
        let mfg = UInt16(e[8]) << 8 | UInt16(e[9])
        let letters = [(mfg >> 10) & 31, (mfg >> 5) & 31, mfg & 31].map { Character(UnicodeScalar(UInt8($0) + 64)) }
        #expect(String(letters) == "VGP")
        // Established 640x480, 800x600, 1024x768.
        #expect(e[35] == 0x21 && e[36] == 0x08)
        // Standard timings include 1024x768 4:3, 1280x800 16:10, 1920x1080 16:9.
        var std: [UInt16] = []
        for i in 0..<8 { std.append(UInt16(e[38 + 2 * i]) << 8 | UInt16(e[39 + 2 * i])) }
        #expect(std.contains(0x6140))
        #expect(std.contains(0x8100))
        #expect(std.contains(0xD1C0))
        // A range-limits descriptor exists and admits the preferred pixel clock.
        let ranges = stride(from: 54, to: 126, by: 18).first { e[$0] == 0 && e[$0 + 1] == 0 && e[$0 + 3] == 0xFD }
        #expect(ranges != nil)
        if let d = ranges {
            #expect(Int(e[d + 9]) * 1000 >= EDIDTestParse.pixelClock10kHz(e))
        }
    }

    @Test func longNamesAreCut() {
        let e = EDIDGenerator.generate(width: 800, height: 600, name: "a-very-long-monitor-name")
        #expect(EDIDTestParse.monitorName(e) == "a-very-long-m")
        #expect(EDIDGenerator.isValidBaseBlock(e))
    }
}

@Suite struct HostPixelStorageTests {
    @Test func memfdIsSharedWithTheMapping() throws {
        let s = try HostPixelStorage(length: 8000, name: "vgpu-test")
        var st = stat()
        #expect(fstat(s.fd, &st) == 0)
        #expect(st.st_size == 8192)   // whole pages, so a udmabuf can be made over it
        #expect(s.length == 8000)
        s.base.storeBytes(of: 0xA5, toByteOffset: 4000, as: UInt8.self)
        var b: UInt8 = 0
        #expect(pread(s.fd, &b, 1, 4000) == 1)
        #expect(b == 0xA5)
        var link = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(s.fd)", &link, 255)
        #expect(n > 0)
        #expect(String(decoding: link.prefix(max(0, n)).map { UInt8(bitPattern: $0) }, as: UTF8.self).hasPrefix("/memfd:vgpu-test"))
    }

    @Test func zeroLengthIsRejected() {
        #expect(throws: HostBufferError.self) { try HostPixelStorage(length: 0, name: "x") }
    }
}

@Suite struct GeometryTests {
    @Test func liesWithinIsOverflowFree() {
        #expect(PixelRect(x: 0, y: 0, width: 8, height: 8).lies(within: 8, 8))
        #expect(PixelRect(x: 8, y: 8, width: 0, height: 0).lies(within: 8, 8))
        #expect(!PixelRect(x: 9, y: 0, width: 0, height: 0).lies(within: 8, 8))
        #expect(!PixelRect(x: 0xFFFF_FFFF, y: 0, width: 2, height: 1).lies(within: 8, 8))
        #expect(!PixelRect(x: 1, y: 0, width: 0xFFFF_FFFF, height: 1).lies(within: 0xFFFF_FFFF, 8))
    }

    @Test func intersection() {
        let a = PixelRect(x: 2, y: 2, width: 4, height: 4)
        #expect(a.intersection(PixelRect(x: 3, y: 1, width: 4, height: 2)) == PixelRect(x: 3, y: 2, width: 3, height: 1))
        #expect(a.intersection(PixelRect(x: 6, y: 0, width: 2, height: 8)) == nil)
        #expect(PixelRect(x: 0xFFFF_FFFF, y: 0xFFFF_FFFF, width: 0xFFFF_FFFF, height: 1)
            .intersection(PixelRect(x: 0xFFFF_FFF0, y: 1, width: 0xFFFF_FFFF, height: 0xFFFF_FFFF))
            == PixelRect(x: 0xFFFF_FFFF, y: 0xFFFF_FFFF, width: 0xFFFF_FFF0, height: 1))
    }

    @Test func byteCountOverflow() {
        // Unwrapped before comparing: Swift Testing's #expect on a `UInt64?` reads 9 bytes of an
        // 8-byte slot (AddressSanitizer: stack-buffer-overflow in its AnyHashable thunk).
        #expect(Resource2D.byteCount(width: 0xFFFF_FFFF, height: 0xFFFF_FFFF) == nil ? true : false)
        #expect((Resource2D.byteCount(width: 1920, height: 1080) ?? 0) == 1920 * 1080 * 4)
    }

    @Test func pixelFormatWireValuesRoundTrip() {
        for f in PixelFormat.allCases { #expect(PixelFormat(wire: f.wireValue) == f) }
        #expect(Set(PixelFormat.allCases.map(\.wireValue)) == Set(formatOrders.map(\.format.rawValue)))
        #expect(PixelFormat.allCases.filter(\.isDisplayNative) == [.b8g8r8a8, .b8g8r8x8])
    }

    @Test func errorCodesMapOneToOne() {
        let codes = GPUError.allCases.map(\.responseType)
        #expect(codes == [0x1200, 0x1201, 0x1202, 0x1203, 0x1204, 0x1205])
        for e in GPUError.allCases { #expect(GPUError(responseType: e.responseType) == e) }
        #expect(GPUError(responseType: 0x1100) == nil)
    }
}

@Suite struct VirglStreamGuardTests {
    private func targets(_ words: [UInt32]) -> [UInt32] {
        words.withUnsafeBytes { VirglStreamGuard.memoryInfoTargets($0) }
    }

    @Test func findsEveryGetMemoryInfoAndSkipsPayloads() {
        #expect(targets([50 | 1 << 16, 7]) == [7])
        // A payload word that looks like the command is not a header.
        #expect(targets([9 | 2 << 16, 50 | 1 << 16, 99, 50 | 1 << 16, 8]) == [8])
        #expect(targets([0, 50 | 1 << 16, 3, 7 | 0 << 16, 50 | 1 << 16, 4]) == [3, 4])
        // Too short, or a length past the end: virglrenderer's decoder stops there too.
        #expect(targets([50]) == [])
        #expect(targets([50 | 5 << 16, 1]) == [])
        #expect(targets([]) == [])
    }
}

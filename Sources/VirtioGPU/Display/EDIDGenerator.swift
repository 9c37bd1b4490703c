/// Makes the 128-byte EDID 1.4 base block (VESA E-EDID Release A, Revision 2) the device returns
/// for GET_EDID when the display has none of its own.
///
/// Content: manufacturer "VGP", digital 8-bit DisplayPort input, sRGB, the physical size for
/// 96 DPI; established timings 640x480, 800x600, 1024x768 at 60 Hz; standard timings 1024x768,
/// 1280x800, 1280x1024, 1440x900, 1600x900, 1680x1050, 1920x1080, 1920x1200 at 60 Hz; a preferred
/// detailed timing for the requested mode (reduced blanking, 60 Hz or lower if the pixel clock
/// would pass 655.35 MHz); a range-limits descriptor that includes it; the monitor name.
public enum EDIDGenerator {
    public static let blockSize = 128
    public static let header: [UInt8] = [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]
    /// Largest size a detailed timing descriptor can express (12-bit fields).
    public static let maxDimension: UInt32 = 4095

    /// The standard timings (byte 38...53): width, height, and the aspect code of EDID 1.4
    /// (0 = 16:10, 1 = 4:3, 2 = 5:4, 3 = 16:9).
    public static let standardModes: [(width: UInt32, height: UInt32, aspect: UInt8)] = [
        (1024, 768, 1), (1280, 800, 0), (1280, 1024, 2), (1440, 900, 0),
        (1600, 900, 3), (1680, 1050, 0), (1920, 1080, 3), (1920, 1200, 0),
    ]

    /// An EDID whose preferred mode is `width`×`height` (clamped to 1...4095; 0 becomes the
    /// default 1280×800). `name` is cut to 13 ASCII characters. `serial` tells heads apart.
    public static func generate(width: UInt32, height: UInt32, name: String = "vgpu", serial: UInt32 = 0) -> [UInt8] {
        let w = width == 0 ? 1280 : min(width, maxDimension)
        let h = height == 0 ? 800 : min(height, maxDimension)
        var e = [UInt8](repeating: 0, count: blockSize)

        // 0-7 header.
        e.replaceSubrange(0..<8, with: header)
        // 8-9 manufacturer id: three letters, 5 bits each ('A' = 1), big endian.
        let letters = "VGP".utf8.map { UInt16($0 - UInt8(ascii: "A") + 1) }
        let mfg = letters[0] << 10 | letters[1] << 5 | letters[2]
        e[8] = UInt8(mfg >> 8)
        e[9] = UInt8(mfg & 0xFF)
        // 10-11 product code, 12-15 serial (little endian), 16 week (0 = unspecified), 17 year-1990.
        e[10] = 0x01
        e[11] = 0x00
        for i in 0..<4 { e[12 + i] = UInt8(truncatingIfNeeded: serial >> (8 * UInt32(i))) }
        e[16] = 0
        e[17] = UInt8(2024 - 1990)
        // 18-19 EDID version 1.4.
        e[18] = 1
        e[19] = 4
        // 20 video input: digital, 8 bits per colour, DisplayPort.
        e[20] = 0xA5
        // 21-22 screen size in cm (96 DPI); 23 gamma 2.2; 24 features: sRGB, preferred timing is native.
        let (mmW, mmH) = (millimetres(w), millimetres(h))
        e[21] = UInt8(clamping: max(1, (mmW + 5) / 10))
        e[22] = UInt8(clamping: max(1, (mmH + 5) / 10))
        e[23] = 120
        e[24] = 0x06
        // 25-34 chromaticity: sRGB primaries and D65 white, 10-bit fractions of 1024.
        let (rx, ry, gx, gy, bx, by, wx, wy): (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16) =
            (655, 338, 307, 614, 154, 61, 320, 337)
        e[25] = UInt8((rx & 3) << 6 | (ry & 3) << 4 | (gx & 3) << 2 | (gy & 3))
        e[26] = UInt8((bx & 3) << 6 | (by & 3) << 4 | (wx & 3) << 2 | (wy & 3))
        for (i, v) in [rx, ry, gx, gy, bx, by, wx, wy].enumerated() { e[27 + i] = UInt8(v >> 2) }
        // 35-37 established timings: 640x480@60 (35 bit 5), 800x600@60 (35 bit 0), 1024x768@60 (36 bit 3).
        e[35] = 0x21
        e[36] = 0x08
        e[37] = 0x00
        // 38-53 standard timings: (width/8 - 31), aspect << 6 | (refresh - 60).
        for i in 0..<8 {
            if i < standardModes.count {
                let m = standardModes[i]
                e[38 + 2 * i] = UInt8(m.width / 8 - 31)
                e[39 + 2 * i] = m.aspect << 6
            } else {
                e[38 + 2 * i] = 0x01
                e[39 + 2 * i] = 0x01
            }
        }
        // 54-71 preferred detailed timing.
        let t = Timing(width: w, height: h)
        e.replaceSubrange(54..<72, with: t.descriptor(widthMM: mmW, heightMM: mmH))
        // 72-89 monitor name.
        e.replaceSubrange(72..<90, with: textDescriptor(tag: 0xFC, name))
        // 90-107 range limits that include the preferred mode.
        e.replaceSubrange(90..<108, with: t.rangeLimits())
        // 108-125 dummy descriptor.
        e[111] = 0x10
        // 126 extension count, 127 checksum.
        e[126] = 0
        e[127] = checksum(e[0..<127])
        return e
    }

    /// The byte that makes the 128 bytes sum to 0 mod 256.
    public static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt8 {
        let sum = bytes.reduce(UInt8(0)) { $0 &+ $1 }
        return 0 &- sum
    }

    /// True if `block` is a 128-byte block with the EDID header and a valid checksum.
    public static func isValidBaseBlock(_ block: [UInt8]) -> Bool {
        block.count >= blockSize && Array(block[0..<8]) == header && block[0..<blockSize].reduce(UInt8(0)) { $0 &+ $1 } == 0
    }

    // MARK: parts

    private static func millimetres(_ pixels: UInt32) -> UInt32 { (pixels * 254 + 480) / 960 }

    private static func textDescriptor(tag: UInt8, _ text: String) -> [UInt8] {
        var d: [UInt8] = [0, 0, 0, tag, 0]
        let ascii = text.utf8.filter { $0 >= 0x20 && $0 < 0x7F }.prefix(13)
        d.append(contentsOf: ascii)
        if d.count < 18 { d.append(0x0A) }
        while d.count < 18 { d.append(0x20) }
        return d
    }

    /// Reduced-blanking style timing: fixed horizontal blanking, about 3.5% vertical.
    struct Timing {
        let width: UInt32, height: UInt32
        let hBlank: UInt32 = 160, hFront: UInt32 = 48, hSync: UInt32 = 32
        let vFront: UInt32 = 3, vSync: UInt32 = 6
        let vBlank: UInt32
        let refresh: UInt32
        /// Pixel clock in 10 kHz units (16-bit field).
        let clock10kHz: UInt32

        init(width: UInt32, height: UInt32) {
            self.width = width
            self.height = height
            vBlank = max(25, (height * 35 + 999) / 1000)
            let total = UInt64(width + hBlank) * UInt64(height + vBlank)
            var hz: UInt64 = 60
            if total * hz > 655_350_000 { hz = max(1, 655_350_000 / total) }
            refresh = UInt32(hz)
            clock10kHz = UInt32((total * hz + 9_999) / 10_000)
        }

        var hTotal: UInt32 { width + hBlank }
        /// Line rate in kHz, rounded down and up.
        var lineKHz: (low: UInt32, high: UInt32) {
            let hz = UInt64(clock10kHz) * 10_000 / UInt64(hTotal)
            return (UInt32(hz / 1000), UInt32((hz + 999) / 1000))
        }

        func descriptor(widthMM: UInt32, heightMM: UInt32) -> [UInt8] {
            var d = [UInt8](repeating: 0, count: 18)
            d[0] = UInt8(clock10kHz & 0xFF)
            d[1] = UInt8(clock10kHz >> 8)
            d[2] = UInt8(width & 0xFF)
            d[3] = UInt8(hBlank & 0xFF)
            d[4] = UInt8((width >> 8) << 4 | (hBlank >> 8))
            d[5] = UInt8(height & 0xFF)
            d[6] = UInt8(vBlank & 0xFF)
            d[7] = UInt8((height >> 8) << 4 | (vBlank >> 8))
            d[8] = UInt8(hFront & 0xFF)
            d[9] = UInt8(hSync & 0xFF)
            d[10] = UInt8((vFront & 0xF) << 4 | (vSync & 0xF))
            d[11] = UInt8((hFront >> 8) << 6 | (hSync >> 8) << 4 | (vFront >> 4) << 2 | (vSync >> 4))
            d[12] = UInt8(widthMM & 0xFF)
            d[13] = UInt8(heightMM & 0xFF)
            d[14] = UInt8((widthMM >> 8) << 4 | (heightMM >> 8))
            d[15] = 0
            d[16] = 0
            d[17] = 0x1A   // digital separate sync, hsync +, vsync −
            return d
        }

        func rangeLimits() -> [UInt8] {
            let line = lineKHz
            let maxClock10MHz = max(17, (clock10kHz + 999) / 1000)
            var d: [UInt8] = [0, 0, 0, 0xFD, 0]
            d.append(UInt8(clamping: min(50, refresh)))          // min vertical Hz
            d.append(UInt8(clamping: max(75, refresh)))          // max vertical Hz
            d.append(UInt8(clamping: max(1, min(30, line.low)))) // min horizontal kHz
            d.append(UInt8(clamping: max(160, line.high)))       // max horizontal kHz
            d.append(UInt8(clamping: maxClock10MHz))             // max pixel clock, 10 MHz units
            d.append(0x01)                                       // range limits only
            d.append(0x0A)
            d.append(contentsOf: [UInt8](repeating: 0x20, count: 6))
            return d
        }
    }
}

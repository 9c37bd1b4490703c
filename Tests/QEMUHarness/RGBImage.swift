import Foundation
import SystemSupport

/// An 8-bit colour.
public struct RGB: Hashable, Sendable, CustomStringConvertible {
    public var r: UInt8, g: UInt8, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }

    public static let black = RGB(0, 0, 0)
    public var isBlack: Bool { r == 0 && g == 0 && b == 0 }
    /// Largest per-channel difference.
    public func distance(to other: RGB) -> Int {
        max(abs(Int(r) - Int(other.r)), abs(Int(g) - Int(other.g)), abs(Int(b) - Int(other.b)))
    }
    public var description: String {
        "#" + [r, g, b].map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

/// A rectangle of pixels, `x..<x+width`, `y..<y+height`.
public struct PixelRect: Hashable, Sendable, CustomStringConvertible {
    public var x: Int, y: Int, width: Int, height: Int
    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x; self.y = y; self.width = width; self.height = height
    }
    public var area: Int { max(0, width) * max(0, height) }
    public func clamped(toWidth w: Int, height h: Int) -> PixelRect {
        let x0 = min(max(0, x), w), y0 = min(max(0, y), h)
        let x1 = min(max(0, x + width), w), y1 = min(max(0, y + height), h)
        return PixelRect(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
    }
    public var description: String { "\(width)x\(height)+\(x)+\(y)" }
}

/// A packed RGB image (3 bytes per pixel, rows top to bottom): what QMP `screendump` gives
/// in PPM format. Reads PPM (P6, maxval 255), writes PNG and PPM.
public struct RGBImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "pixel buffer does not match \(width)x\(height)")
        self.width = width; self.height = height; self.pixels = pixels
    }

    public init(width: Int, height: Int, fill: RGB = .black) {
        self.width = width; self.height = height
        var p = [UInt8](repeating: 0, count: width * height * 3)
        if !fill.isBlack {
            for i in stride(from: 0, to: p.count, by: 3) { p[i] = fill.r; p[i + 1] = fill.g; p[i + 2] = fill.b }
        }
        self.pixels = p
    }

    public var bounds: PixelRect { PixelRect(x: 0, y: 0, width: width, height: height) }

    public subscript(x: Int, y: Int) -> RGB {
        get {
            let i = (y * width + x) * 3
            return RGB(pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            let i = (y * width + x) * 3
            pixels[i] = newValue.r; pixels[i + 1] = newValue.g; pixels[i + 2] = newValue.b
        }
    }

    // MARK: PPM

    /// Parses a binary PPM (P6) with maxval 255.
    public init(ppm data: Data) throws {
        let bytes = [UInt8](data)
        var pos = 0
        func skipSpaceAndComments() {
            while pos < bytes.count {
                if bytes[pos] == UInt8(ascii: "#") {
                    while pos < bytes.count && bytes[pos] != UInt8(ascii: "\n") { pos += 1 }
                } else if [0x20, 0x09, 0x0a, 0x0d].contains(bytes[pos]) {
                    pos += 1
                } else { return }
            }
        }
        func token() throws -> String {
            skipSpaceAndComments()
            let start = pos
            while pos < bytes.count && ![0x20, 0x09, 0x0a, 0x0d].contains(bytes[pos]) { pos += 1 }
            guard pos > start else { throw HarnessError.badImage("truncated PPM header") }
            return String(decoding: bytes[start..<pos], as: UTF8.self)
        }
        guard try token() == "P6" else { throw HarnessError.badImage("not a binary PPM (P6)") }
        guard let w = Int(try token()), let h = Int(try token()), let maxval = Int(try token()),
              w > 0, h > 0 else { throw HarnessError.badImage("bad PPM header") }
        guard maxval == 255 else { throw HarnessError.badImage("PPM maxval \(maxval), want 255") }
        pos += 1  // the single whitespace byte before the raster
        let count = w * h * 3
        guard bytes.count - pos >= count else {
            throw HarnessError.badImage("PPM raster has \(bytes.count - pos) bytes, want \(count)")
        }
        self.init(width: w, height: h, pixels: Array(bytes[pos..<(pos + count)]))
    }

    public init(ppmFile url: URL) throws {
        try self.init(ppm: try Data(contentsOf: url))
    }

    public func ppmData() -> Data {
        var data = Data("P6\n\(width) \(height)\n255\n".utf8)
        data.append(contentsOf: pixels)
        return data
    }

    // MARK: PNG

    /// A PNG (8-bit RGB, stored deflate blocks): the project's one encoder, SystemSupport's `PNG`.
    public func pngData() -> Data {
        Data(PNG.encodeRGB(width: width, height: height, rgb: pixels))
    }

    public func writePNG(to url: URL) throws {
        try pngData().write(to: url)
    }

    // MARK: Measuring

    /// How many pixels in `rect` satisfy `predicate`.
    public func count(in rect: PixelRect? = nil, where predicate: (RGB) -> Bool) -> Int {
        let r = (rect ?? bounds).clamped(toWidth: width, height: height)
        var n = 0
        for y in r.y..<(r.y + r.height) {
            for x in r.x..<(r.x + r.width) where predicate(self[x, y]) { n += 1 }
        }
        return n
    }

    /// Share (0...1) of pixels in `rect` that satisfy `predicate`.
    public func fraction(in rect: PixelRect? = nil, where predicate: (RGB) -> Bool) -> Double {
        let r = (rect ?? bounds).clamped(toWidth: width, height: height)
        guard r.area > 0 else { return 0 }
        return Double(count(in: r, where: predicate)) / Double(r.area)
    }

    /// Share of pixels in `rect` that are not black.
    public func litFraction(in rect: PixelRect? = nil) -> Double {
        fraction(in: rect) { !$0.isBlack }
    }

    /// The most common colour in `rect`, with its share.
    public func dominantColor(in rect: PixelRect? = nil) -> (color: RGB, fraction: Double) {
        let r = (rect ?? bounds).clamped(toWidth: width, height: height)
        var counts: [RGB: Int] = [:]
        for y in r.y..<(r.y + r.height) { for x in r.x..<(r.x + r.width) { counts[self[x, y], default: 0] += 1 } }
        guard let best = counts.max(by: { $0.value < $1.value }), r.area > 0 else { return (.black, 0) }
        return (best.key, Double(best.value) / Double(r.area))
    }

    /// The smallest rectangle holding every pixel that satisfies `predicate` (nil if none).
    public func boundingBox(where predicate: (RGB) -> Bool) -> PixelRect? {
        var x0 = Int.max, y0 = Int.max, x1 = -1, y1 = -1
        for y in 0..<height {
            for x in 0..<width where predicate(self[x, y]) {
                x0 = min(x0, x); x1 = max(x1, x); y0 = min(y0, y); y1 = max(y1, y)
            }
        }
        guard x1 >= 0 else { return nil }
        return PixelRect(x: x0, y: y0, width: x1 - x0 + 1, height: y1 - y0 + 1)
    }

    /// Pixels that differ by more than `tolerance` (per channel) from `other`, in `rect`.
    /// Images of different sizes differ everywhere.
    public func differingPixels(from other: RGBImage, in rect: PixelRect? = nil, tolerance: Int = 0) -> Int {
        let r = (rect ?? bounds).clamped(toWidth: width, height: height)
        guard other.width == width, other.height == height else { return r.area }
        var n = 0
        for y in r.y..<(r.y + r.height) {
            for x in r.x..<(r.x + r.width) where self[x, y].distance(to: other[x, y]) > tolerance { n += 1 }
        }
        return n
    }

    /// A copy of `rect`.
    public func cropped(to rect: PixelRect) -> RGBImage {
        let r = rect.clamped(toWidth: width, height: height)
        var out = [UInt8]()
        out.reserveCapacity(r.area * 3)
        for y in r.y..<(r.y + r.height) {
            out += pixels[((y * width + r.x) * 3)..<((y * width + r.x + r.width) * 3)]
        }
        return RGBImage(width: r.width, height: r.height, pixels: out)
    }
}

extension String {
    func leftPadded(to n: Int, with c: Character = "0") -> String {
        count >= n ? self : String(repeating: c, count: n - count) + self
    }
}

import ControlProtocol
import VirtioGPU

/// DRM fourcc codes (drm_fourcc.h) of the virtio-gpu 2D formats, by name (the mapping itself is
/// `PixelFormat.drmFourCCName`).
public enum DRMFourCC {
    public static func code(_ name: String) -> UInt32 {
        let b = Array(name.utf8)
        precondition(b.count == 4)
        return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
    }

    /// The fourcc name ("XR24") for a virtio format.
    public static func name(for format: PixelFormat) -> String { format.drmFourCCName }

    /// The four characters of a fourcc code (non-printable bytes as '?').
    public static func name(code: UInt32) -> String {
        String((0..<4).map { i -> Character in
            let b = UInt8(truncatingIfNeeded: code >> (8 * UInt32(i)))
            return b >= 0x20 && b < 0x7F ? Character(UnicodeScalar(b)) : "?"
        })
    }

    /// The virtio format with this fourcc name, if any.
    public static func format(named name: String) -> PixelFormat? {
        PixelFormat.allCases.first { Self.name(for: $0) == name }
    }

    /// DRM_FORMAT_MOD_LINEAR.
    public static let linearModifier: UInt64 = 0
}

/// Converts `height` rows of 32-bit pixels in `format` (row pitch `stride`) to packed RGB.
public func convertToRGB(_ base: UnsafeRawPointer, format: PixelFormat, width: Int, height: Int, stride: Int) -> [UInt8] {
    let o = format.byteOffsets
    var rgb = [UInt8](repeating: 0, count: width * height * 3)
    let src = base.assumingMemoryBound(to: UInt8.self)
    rgb.withUnsafeMutableBufferPointer { d in
        var i = 0
        for y in 0..<height {
            let row = src + y * stride
            for x in 0..<width {
                let p = row + x * 4
                d[i] = p[o.r]; d[i + 1] = p[o.g]; d[i + 2] = p[o.b]
                i += 3
            }
        }
    }
    return rgb
}

/// DRM fourcc codes (drm_fourcc.h) as the control protocol names buffer layouts ("XR24").
/// Client-side knowledge only: which virtio format has which name is the server's
/// (`PixelFormat.drmFourCCName`, ControlServer/Formats.swift).
public enum DRMFourCC {
    /// The code of a four-character name, first character in the low byte; nil for anything
    /// that is not four bytes (a server's string is not trusted).
    public static func code(_ name: String) -> UInt32? {
        let b = Array(name.utf8)
        guard b.count == 4 else { return nil }
        return UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24
    }

    /// The four characters of a fourcc code (non-printable bytes as '?').
    public static func name(code: UInt32) -> String {
        String((0..<4).map { i -> Character in
            let b = UInt8(truncatingIfNeeded: code >> (8 * UInt32(i)))
            return b >= 0x20 && b < 0x7F ? Character(UnicodeScalar(b)) : "?"
        })
    }

    /// Where red, green and blue sit in memory in one pixel of a 32-bit RGB fourcc (DRM formats
    /// are little-endian: XRGB8888 is B, G, R, X in byte order); nil for any other fourcc.
    public static func rgbByteOffsets(named name: String) -> (r: Int, g: Int, b: Int)? {
        switch name {
        case "XR24", "AR24": (2, 1, 0)   // [X|A]RGB8888
        case "BX24", "BA24": (1, 2, 3)   // BGR[X|A]8888
        case "XB24", "AB24": (0, 1, 2)   // [X|A]BGR8888
        case "RX24", "RA24": (3, 2, 1)   // RGB[X|A]8888
        default: nil
        }
    }

    /// DRM_FORMAT_MOD_LINEAR.
    public static let linearModifier: UInt64 = 0
}

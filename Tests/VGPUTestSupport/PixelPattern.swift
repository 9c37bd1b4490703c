/// `width`×`height` XRGB pixels with a distinct value per pixel (so misplaced rows and columns
/// show), rows `stride` bytes apart; row padding is 0xEE so a wrong stride shows too. Different
/// seeds differ at every pixel.
public func pixelPattern(width: Int, height: Int, stride: Int, seed: UInt32 = 1) -> [UInt8] {
    var bytes = [UInt8](repeating: 0xEE, count: stride * height)
    for y in 0..<height {
        for x in 0..<width {
            let v = (UInt32(x) &* 2_654_435_761) ^ (UInt32(y) &* 40503) ^ seed
            let o = y * stride + x * 4
            bytes[o] = UInt8(truncatingIfNeeded: v)
            bytes[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
            bytes[o + 2] = UInt8(truncatingIfNeeded: v >> 16)
            bytes[o + 3] = 0xFF
        }
    }
    return bytes
}

/// The same pattern, packed (rows `width * 4` bytes apart).
public func pixelPattern(_ width: Int, _ height: Int, seed: UInt32 = 1) -> [UInt8] {
    pixelPattern(width: width, height: height, stride: width * 4, seed: seed)
}

import VirglRenderer

/// The most host memory a RESOURCE_CREATE_3D can make virglrenderer allocate, for the memory
/// caps: bytes per texel of the format × every texel of every mip level, array layer and sample.
/// An upper bound by design: compressed formats count 4 bytes a texel (what a host without
/// native support stores after decompressing), formats not listed count 16.
public enum VirglResourceSize {
    /// Bytes of the whole resource, or nil if the product overflows 64 bits.
    public static func bytes(_ a: VirglResourceCreate3D) -> UInt64? {
        let texel = bytesPerTexel(a.format)
        let is3D = a.target == VirglTarget.texture3D
        // Past 31 halvings every dimension is 1: more levels add a texel each.
        let levels = min(a.lastLevel, 31)
        var texels: UInt64 = 0
        for level in 0...levels {
            let w = max(UInt64(a.width) >> level, 1), h = max(UInt64(a.height) >> level, 1)
            let d = is3D ? max(UInt64(a.depth) >> level, 1) : 1
            let (wh, o1) = w.multipliedReportingOverflow(by: h)
            let (whd, o2) = wh.multipliedReportingOverflow(by: d)
            let (sum, o3) = texels.addingReportingOverflow(whd)
            if o1 || o2 || o3 { return nil }
            texels = sum
        }
        texels &+= UInt64(a.lastLevel - levels)
        // A non-3D target with depth > 1 is refused by virglrenderer; count it anyway.
        let layers = UInt64(max(a.arraySize, 1)) * (is3D ? 1 : UInt64(max(a.depth, 1)))
        let samples = UInt64(max(a.sampleCount, 1))
        var total = texels
        for factor in [layers, samples, texel] {
            let (p, o) = total.multipliedReportingOverflow(by: factor)
            if o { return nil }
            total = p
        }
        return total
    }

    /// Bytes per texel of a virgl (gallium) format number (virglrenderer's `virgl_hw.h`).
    public static func bytesPerTexel(_ format: UInt32) -> UInt64 {
        switch format {
        case 9, 10, 11, 23, 64, 69, 74, 82, 95, 127, 130, 139, 147, 148, 150, 168, 169, 177, 181,
             201, 202, 203, 205, 206, 207, 312:
            return 1
        case 5, 6, 7, 12, 13, 14, 15, 16, 48, 52, 56, 60, 65, 70, 75, 83, 91, 96, 117, 118, 120, 122, 135,
             141, 142, 149, 151, 152, 154, 155, 156, 158, 170, 171, 178, 182, 185, 189, 204, 208, 209, 210,
             211, 213, 214, 215, 242, 247, 248, 254, 259, 260, 261, 263, 264, 311,
             163...167:   // planar YUV: at most 2 bytes a texel
            return 2
        case 66, 71, 76, 84, 97, 179, 183:
            return 3
        case 1...4, 8, 17...22, 28, 32, 36, 40, 44, 49, 53, 57, 61, 67, 68, 72, 77, 85, 87, 92, 98...104,
             119, 121, 123, 124, 125, 128, 129, 131, 132, 133, 134, 136, 137, 140, 153, 157, 159, 160, 162,
             172...176, 180, 184, 186, 190, 193, 197, 212, 216...219, 221...223, 225, 227...233, 243, 244,
             245, 249, 250, 253, 262, 265, 266, 267, 268, 308:
            return 4
        case 50, 54, 58, 62, 93, 187, 191:
            return 6
        case 24, 29, 33, 37, 41, 45, 51, 55, 59, 63, 88, 94, 126, 138, 161, 188, 192, 194, 198, 220, 224,
             234...238, 246, 251, 252:
            return 8
        case 30, 34, 38, 42, 46, 89, 195, 199:
            return 12
        case 25, 31, 35, 39, 43, 47, 90, 196, 200, 239, 240, 241:
            return 16
        case 26: return 24
        case 27: return 32
        case 105...116, 143...146, 226, 255...258, 269...306:   // block-compressed
            return 4
        default:
            return 16
        }
    }
}

// Reading an exported buffer's pixels on the client side (`vgpuctl dump`): the server's layout
// checked against the fd, then the pixels converted to RGB for the PNG.

extension BufferLayout {
    /// Why the 32-bit pixels this layout describes cannot be read safely from a mapping of an
    /// fd holding `fileSize` bytes (nil: they can). A client never trusts the server's numbers:
    /// stride × height may overflow, the offset may push the rows past `size`, and `size` may
    /// pass the file's end (a mapping past it faults with SIGBUS).
    public func unreadableReason(fileSize: Int) -> String? {
        guard width > 0, height > 0 else { return "empty layout \(width)x\(height)" }
        guard stride >= 0, offset >= 0, size > 0 else { return "negative stride \(stride), offset \(offset) or size \(size)" }
        let (row, o1) = Int(width).multipliedReportingOverflow(by: 4)
        guard !o1, stride >= row else { return "stride \(stride) shorter than a row of \(width) pixels" }
        // The last row needs only its pixels, not a whole stride.
        let (rows, o2) = stride.multipliedReportingOverflow(by: Int(height) - 1)
        let (body, o3) = rows.addingReportingOverflow(row)
        let (end, o4) = body.addingReportingOverflow(offset)
        guard !o2, !o3, !o4 else { return "stride \(stride) × height \(height) + offset \(offset) overflows" }
        guard end <= size else { return "offset \(offset) + \(height) rows of stride \(stride) pass the size \(size)" }
        guard size <= fileSize else { return "size \(size) passes the end of the buffer (\(fileSize) bytes)" }
        return nil
    }
}

/// Converts `height` rows of 32-bit pixels (row pitch `stride`, colour bytes at `offsets`) to packed RGB.
public func convertToRGB(_ base: UnsafeRawPointer, offsets: (r: Int, g: Int, b: Int), width: Int, height: Int, stride: Int) -> [UInt8] {
    var rgb = [UInt8](repeating: 0, count: width * height * 3)
    let src = base.assumingMemoryBound(to: UInt8.self)
    rgb.withUnsafeMutableBufferPointer { d in
        var i = 0
        for y in 0..<height {
            let row = src + y * stride
            for x in 0..<width {
                let p = row + x * 4
                d[i] = p[offsets.r]; d[i + 1] = p[offsets.g]; d[i + 2] = p[offsets.b]
                i += 3
            }
        }
    }
    return rgb
}

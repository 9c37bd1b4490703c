// A tiny encoder for the virgl command stream (tests: VirglRendererTests and the device's 3D tests) (virglrenderer's src/virgl_protocol.h): enough
// to make a surface on a render target, bind it and clear it.

/// `enum virgl_context_cmd` values used here.
public enum VirglCommand: UInt32 {
    case nop = 0
    case createObject = 1
    case bindObject = 2
    case destroyObject = 3
    case setFramebufferState = 5
    case clear = 7
}

/// `enum virgl_object_type` values used here.
public enum VirglObject: UInt32 {
    case none = 0
    case surface = 8
}

/// Gallium `PIPE_CLEAR_*` bits.
public enum PipeClear {
    public static let depth: UInt32 = 1 << 0
    public static let stencil: UInt32 = 1 << 1
    public static let color0: UInt32 = 1 << 2
}

public struct VirglCommandStream {
    public private(set) var words: [UInt32] = []

    public init() {}

    /// `VIRGL_CMD0(cmd, obj, len)`: 8-bit command, 8-bit object type, 16-bit payload length in dwords.
    private mutating func header(_ command: VirglCommand, _ object: VirglObject = .none, length: Int) {
        words.append(command.rawValue | object.rawValue << 8 | UInt32(length) << 16)
    }

    /// CREATE_OBJECT SURFACE (`VIRGL_OBJ_SURFACE_SIZE` = 5): handle, resource, format, level,
    /// first | last layer << 16.
    public mutating func createSurface(handle: UInt32, resource: UInt32, format: UInt32, level: UInt32 = 0,
                                firstLayer: UInt32 = 0, lastLayer: UInt32 = 0) {
        header(.createObject, .surface, length: 5)
        words += [handle, resource, format, level, firstLayer | lastLayer << 16]
    }

    /// DESTROY_OBJECT: handle.
    public mutating func destroySurface(handle: UInt32) {
        header(.destroyObject, .surface, length: 1)
        words.append(handle)
    }

    /// SET_FRAMEBUFFER_STATE (`nr_cbufs + 2`): count, depth-stencil surface, colour surfaces.
    public mutating func setFramebufferState(colorSurfaces: [UInt32], depthStencilSurface: UInt32 = 0) {
        header(.setFramebufferState, length: colorSurfaces.count + 2)
        words += [UInt32(colorSurfaces.count), depthStencilSurface] + colorSurfaces
    }

    /// CLEAR (`VIRGL_OBJ_CLEAR_SIZE` = 8): buffers, colour as 4 floats, depth as a double
    /// (low dword first), stencil.
    public mutating func clear(red: Float, green: Float, blue: Float, alpha: Float,
                        buffers: UInt32 = PipeClear.color0, depth: Double = 0, stencil: UInt32 = 0) {
        header(.clear, length: 8)
        let depthBits = depth.bitPattern
        words += [buffers, red.bitPattern, green.bitPattern, blue.bitPattern, alpha.bitPattern,
                  UInt32(truncatingIfNeeded: depthBits), UInt32(truncatingIfNeeded: depthBits >> 32), stencil]
    }

    /// A NOP with `count` payload dwords (virglrenderer skips them).
    public mutating func nop(payload count: Int = 0) {
        header(.nop, length: count)
        words += Array(repeating: 0, count: count)
    }
}

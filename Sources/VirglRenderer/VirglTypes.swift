/// Capability sets virglrenderer serves for the virgl (OpenGL) context type
/// (`VIRTIO_GPU_CAPSET_VIRGL`, `VIRTIO_GPU_CAPSET_VIRGL2` in linux/virtio_gpu.h).
public enum VirglCapset: UInt32, CaseIterable, Sendable {
    case virgl = 1
    case virgl2 = 2
}

/// GET_CAPSET_INFO's answer for one capset.
public struct VirglCapsetInfo: Equatable, Sendable {
    public let id: UInt32
    public let maxVersion: UInt32
    public let maxSize: UInt32
}

/// Gallium `pipe_texture_target` values, as RESOURCE_CREATE_3D carries them.
public enum VirglTarget {
    public static let buffer: UInt32 = 0
    public static let texture1D: UInt32 = 1
    public static let texture2D: UInt32 = 2
    public static let texture3D: UInt32 = 3
    public static let textureCube: UInt32 = 4
    public static let textureRect: UInt32 = 5
    public static let texture1DArray: UInt32 = 6
    public static let texture2DArray: UInt32 = 7
    public static let textureCubeArray: UInt32 = 8
}

/// `VIRGL_BIND_*` flags (virglrenderer's virgl_hw.h), the ones a backend names.
public enum VirglBind {
    public static let depthStencil: UInt32 = 1 << 0
    public static let renderTarget: UInt32 = 1 << 1
    public static let samplerView: UInt32 = 1 << 3
    public static let vertexBuffer: UInt32 = 1 << 4
    public static let indexBuffer: UInt32 = 1 << 5
    public static let constantBuffer: UInt32 = 1 << 6
    public static let cursor: UInt32 = 1 << 16
    public static let scanout: UInt32 = 1 << 18
    public static let shared: UInt32 = 1 << 20
}

/// `enum virgl_formats` values (virgl_hw.h) for the 32-bit colour formats virtio-gpu 2D uses.
public enum VirglFormat {
    public static let b8g8r8a8Unorm: UInt32 = 1
    public static let b8g8r8x8Unorm: UInt32 = 2
    public static let a8r8g8b8Unorm: UInt32 = 3
    public static let x8r8g8b8Unorm: UInt32 = 4
    public static let r8g8b8a8Unorm: UInt32 = 67
    public static let x8b8g8r8Unorm: UInt32 = 68
    public static let a8b8g8r8Unorm: UInt32 = 121
    public static let r8g8b8x8Unorm: UInt32 = 134

    /// Bytes per pixel of the formats above; nil for others (the caller then gives a stride).
    static func bytesPerPixel(_ format: UInt32) -> Int? {
        switch format {
        case b8g8r8a8Unorm, b8g8r8x8Unorm, a8r8g8b8Unorm, x8r8g8b8Unorm,
             r8g8b8a8Unorm, x8b8g8r8Unorm, a8b8g8r8Unorm, r8g8b8x8Unorm: 4
        default: nil
        }
    }
}

/// RESOURCE_CREATE_3D (`struct virtio_gpu_resource_create_3d`), field for field.
public struct VirglResourceCreate3D: Equatable, Sendable {
    public var resourceID: UInt32
    public var target: UInt32
    public var format: UInt32
    public var bind: UInt32
    public var width: UInt32
    public var height: UInt32
    public var depth: UInt32
    public var arraySize: UInt32
    public var lastLevel: UInt32
    public var sampleCount: UInt32
    public var flags: UInt32

    public init(resourceID: UInt32, target: UInt32 = VirglTarget.texture2D, format: UInt32, bind: UInt32,
                width: UInt32, height: UInt32, depth: UInt32 = 1, arraySize: UInt32 = 1,
                lastLevel: UInt32 = 0, sampleCount: UInt32 = 0, flags: UInt32 = 0) {
        self.resourceID = resourceID
        self.target = target
        self.format = format
        self.bind = bind
        self.width = width
        self.height = height
        self.depth = depth
        self.arraySize = arraySize
        self.lastLevel = lastLevel
        self.sampleCount = sampleCount
        self.flags = flags
    }
}

/// A 3D box in texels (`struct virtio_gpu_box`).
public struct VirglBox: Equatable, Sendable {
    public var x: UInt32, y: UInt32, z: UInt32
    public var width: UInt32, height: UInt32, depth: UInt32

    public init(x: UInt32 = 0, y: UInt32 = 0, z: UInt32 = 0, width: UInt32, height: UInt32, depth: UInt32 = 1) {
        self.x = x; self.y = y; self.z = z
        self.width = width; self.height = height; self.depth = depth
    }
}

/// TRANSFER_TO_HOST_3D / TRANSFER_FROM_HOST_3D (`struct virtio_gpu_transfer_host_3d`): a box of
/// one mip level, and where it lies in the resource's backing (`offset`, row `stride` and
/// `layerStride` in bytes; 0 lets virglrenderer use the tight values).
public struct VirglTransfer: Equatable, Sendable {
    public var resourceID: UInt32
    public var contextID: UInt32
    public var level: UInt32
    public var stride: UInt32
    public var layerStride: UInt32
    public var box: VirglBox
    public var offset: UInt64

    public init(resourceID: UInt32, contextID: UInt32 = 0, level: UInt32 = 0, stride: UInt32 = 0,
                layerStride: UInt32 = 0, box: VirglBox, offset: UInt64 = 0) {
        self.resourceID = resourceID
        self.contextID = contextID
        self.level = level
        self.stride = stride
        self.layerStride = layerStride
        self.box = box
        self.offset = offset
    }
}

/// What virglrenderer reports about a resource (`virgl_renderer_resource_get_info`).
public struct VirglResourceInfo: Equatable, Sendable {
    public let resourceID: UInt32
    /// A `VirglFormat` value.
    public let format: UInt32
    public let width: UInt32
    public let height: UInt32
    public let depth: UInt32
    public let flags: UInt32
    /// The GL texture name (0 for buffers).
    public let textureID: UInt32
    /// Bytes per row of level 0.
    public let stride: UInt32
    public let drmFourcc: Int32

    /// `VIRGL_RESOURCE_Y_0_TOP`: row 0 is the top row. Without it the image is stored bottom
    /// up (GL's way) and a scanout shows it flipped (QEMU passes this flag to its display).
    public var isYZeroTop: Bool { flags & 1 != 0 }
}

/// A fence that retired: the id and context given to `createFence`.
public struct VirglFenceCompletion: Equatable, Sendable {
    public let fenceID: UInt64
    public let contextID: UInt32
}

/// One dmabuf plane made from a resource's texture. The caller owns `fd` and must close it.
public struct VirglDMABuf: Equatable, Sendable {
    public let fd: Int32
    /// The texture's row 0 is its top row (`VirglResourceInfo.isYZeroTop`).
    public let yZeroTop: Bool
    public let stride: Int32
    public let offset: Int32
    public let fourcc: UInt32
    public let modifier: UInt64
}

import CShims

/// The eight 32-bit formats of RESOURCE_CREATE_2D (`enum virtio_gpu_formats`, virtio 1.2
/// section 5.7.6.8). Names give the byte order in memory: `b8g8r8a8` is B at byte 0, A at byte 3.
public enum PixelFormat: Sendable, CaseIterable, CustomStringConvertible {
    case b8g8r8a8, b8g8r8x8, a8r8g8b8, x8r8g8b8, r8g8b8a8, x8b8g8r8, a8b8g8r8, r8g8b8x8

    /// From the wire value; nil for anything else (ERR_INVALID_PARAMETER).
    public init?(wire: UInt32) {
        switch wire {
        case VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM.rawValue: self = .b8g8r8a8
        case VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue: self = .b8g8r8x8
        case VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM.rawValue: self = .a8r8g8b8
        case VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM.rawValue: self = .x8r8g8b8
        case VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM.rawValue: self = .r8g8b8a8
        case VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM.rawValue: self = .x8b8g8r8
        case VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM.rawValue: self = .a8b8g8r8
        case VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM.rawValue: self = .r8g8b8x8
        default: return nil
        }
    }

    /// The `VIRTIO_GPU_FORMAT_*` value.
    public var wireValue: UInt32 {
        switch self {
        case .b8g8r8a8: VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM.rawValue
        case .b8g8r8x8: VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue
        case .a8r8g8b8: VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM.rawValue
        case .x8r8g8b8: VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM.rawValue
        case .r8g8b8a8: VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM.rawValue
        case .x8b8g8r8: VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM.rawValue
        case .a8b8g8r8: VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM.rawValue
        case .r8g8b8x8: VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM.rawValue
        }
    }

    public static let bytesPerPixel = 4

    /// Already XRGB8888 in memory (bytes B,G,R,X): what the display takes, so a flush can hand
    /// the display a pointer into the host copy with no conversion.
    public var isDisplayNative: Bool { self == .b8g8r8a8 || self == .b8g8r8x8 }

    /// Byte offsets of B, G, R and alpha (nil for the X formats) within one pixel.
    public var byteOffsets: (b: Int, g: Int, r: Int, a: Int?) {
        switch self {
        case .b8g8r8a8: (0, 1, 2, 3)
        case .b8g8r8x8: (0, 1, 2, nil)
        case .a8r8g8b8: (3, 2, 1, 0)
        case .x8r8g8b8: (3, 2, 1, nil)
        case .r8g8b8a8: (2, 1, 0, 3)
        case .r8g8b8x8: (2, 1, 0, nil)
        case .a8b8g8r8: (1, 2, 3, 0)
        case .x8b8g8r8: (1, 2, 3, nil)
        }
    }

    public var description: String {
        switch self {
        case .b8g8r8a8: "B8G8R8A8"
        case .b8g8r8x8: "B8G8R8X8"
        case .a8r8g8b8: "A8R8G8B8"
        case .x8r8g8b8: "X8R8G8B8"
        case .r8g8b8a8: "R8G8B8A8"
        case .x8b8g8r8: "X8B8G8R8"
        case .a8b8g8r8: "A8B8G8R8"
        case .r8g8b8x8: "R8G8B8X8"
        }
    }
}

extension PixelFormat {
    /// The DRM fourcc name (drm_fourcc.h) of this format's memory layout. virtio names give bytes
    /// in memory order; DRM names a little-endian 32-bit word from the high bits down, so virtio
    /// B8G8R8A8 (bytes B,G,R,A) is DRM ARGB8888 ("AR24"), as in QEMU and crosvm.
    public var drmFourCCName: String {
        switch self {
        case .b8g8r8a8: "AR24"   // DRM_FORMAT_ARGB8888
        case .b8g8r8x8: "XR24"   // DRM_FORMAT_XRGB8888
        case .a8r8g8b8: "BA24"   // DRM_FORMAT_BGRA8888
        case .x8r8g8b8: "BX24"   // DRM_FORMAT_BGRX8888
        case .r8g8b8a8: "AB24"   // DRM_FORMAT_ABGR8888
        case .r8g8b8x8: "XB24"   // DRM_FORMAT_XBGR8888
        case .a8b8g8r8: "RA24"   // DRM_FORMAT_RGBA8888
        case .x8b8g8r8: "RX24"   // DRM_FORMAT_RGBX8888
        }
    }

    /// The DRM fourcc code: the four name bytes, first in the low byte.
    public var drmFourCC: UInt32 {
        drmFourCCName.utf8.reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
}

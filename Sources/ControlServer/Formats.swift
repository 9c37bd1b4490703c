import ControlProtocol
import VirtioGPU

/// The server's half of the fourcc names: which virtio format has which name (the mapping itself
/// is `PixelFormat.drmFourCCName`). Clients need only ControlProtocol's `DRMFourCC`.
extension DRMFourCC {
    /// The fourcc name ("XR24") for a virtio format.
    public static func name(for format: PixelFormat) -> String { format.drmFourCCName }

    /// The virtio format with this fourcc name, if any.
    public static func format(named name: String) -> PixelFormat? {
        PixelFormat.allCases.first { Self.name(for: $0) == name }
    }
}

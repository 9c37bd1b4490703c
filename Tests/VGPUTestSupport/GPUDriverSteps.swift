import CShims
import FrontendSide
import VirtioCore

/// A driver step failed: what it was and the response type it got.
public struct GPUStepFailed: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension VirtioGPUDriver {
    /// Throws unless `response` is OK_NODATA.
    public func check(_ response: Response, _ what: String) throws {
        guard response.type == VIRTIO_GPU_RESP_OK_NODATA.rawValue else {
            throw GPUStepFailed("\(what): 0x\(String(response.type, radix: 16))")
        }
    }

    /// Guest memory holding `bytes`, page aligned.
    public func place(_ bytes: [UInt8]) -> GuestPhysicalAddress {
        let a = ram.allocate(bytes.count, alignment: 4096)
        ram.write(bytes, at: a)
        return a
    }

    /// Creates a resource with backing that holds `pixels` (4 bytes each) and transfers it all;
    /// throws on the first answer that is not OK. Returns the backing's guest address.
    public func makeResource(id: UInt32, format: UInt32 = VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM.rawValue, width: UInt32, height: UInt32,
                             pixels: [UInt8]) throws -> GuestPhysicalAddress {
        let backing = place(pixels)
        try check(createResource2D(id: id, format: format, width: width, height: height), "create")
        try check(attachBacking(id: id, entries: [(backing, UInt32(pixels.count))]), "attach")
        try check(transferToHost2D(id: id, rect: VirtioGPUDriver.rect(0, 0, width, height)), "transfer")
        return backing
    }
}

extension VirtioGPUDriver.Response {
    /// The 16 UUID bytes of an OK_RESOURCE_UUID answer; nil for any other answer.
    public var resourceUUID: [UInt8]? {
        guard type == VIRTIO_GPU_RESP_OK_RESOURCE_UUID.rawValue, let u = load(virtio_gpu_resp_resource_uuid.self) else { return nil }
        return withUnsafeBytes(of: u.uuid) { Array($0) }
    }
}

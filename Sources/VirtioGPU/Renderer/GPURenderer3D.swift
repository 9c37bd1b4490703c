import CShims
import VirtioCore

/// One capset a 3D renderer serves (GET_CAPSET_INFO by index).
public struct CapsetInfo: Equatable, Sendable {
    public let id: UInt32
    public let maxVersion: UInt32
    public let maxSize: UInt32
    public init(id: UInt32, maxVersion: UInt32, maxSize: UInt32) {
        self.id = id
        self.maxVersion = maxVersion
        self.maxSize = maxSize
    }
}

/// A renderer that also runs the virgl commands (VIRTIO_GPU_F_VIRGL): contexts, 3D resources,
/// 3D transfers, command streams and fences. The dispatcher decodes and checks the wire
/// structs; the renderer checks what needs its state and throws the `GPUFailure` the guest
/// gets (ERR_INVALID_CONTEXT_ID, ERR_INVALID_RESOURCE_ID, ERR_INVALID_PARAMETER, ERR_UNSPEC for
/// the renderer's own refusals).
public protocol GPURenderer3D: GPURenderer {
    /// Capsets by GET_CAPSET_INFO index.
    var capsets: [CapsetInfo] { get }
    /// GET_CAPSET: the capset's bytes. Throws `invalidParameter` for unknown ids and versions.
    func capset(id: UInt32, version: UInt32) throws(GPUFailure) -> [UInt8]

    func createContext(_ id: UInt32, name: String, contextInit: UInt32) throws(GPUFailure)
    func destroyContext(_ id: UInt32) throws(GPUFailure)
    func attachResource(_ id: ResourceID, toContext context: UInt32) throws(GPUFailure)
    func detachResource(_ id: ResourceID, fromContext context: UInt32) throws(GPUFailure)

    func createResource3D(_ c: virtio_gpu_resource_create_3d) throws(GPUFailure)
    /// TRANSFER_TO_HOST_3D / TRANSFER_FROM_HOST_3D; `context` is the header's ctx_id.
    func transferToHost3D(_ t: virtio_gpu_transfer_host_3d, context: UInt32) throws(GPUFailure)
    func transferFromHost3D(_ t: virtio_gpu_transfer_host_3d, context: UInt32) throws(GPUFailure)
    /// SUBMIT_3D.
    func submit3D(context: UInt32, commands: [UInt8]) throws(GPUFailure)

    /// Queues a fence after everything submitted so far on `context`. `completed` is called,
    /// on some other thread, once it (and every fence created before it) has signalled.
    func createFence(_ fenceID: UInt64, context: UInt32, completed: @escaping @Sendable () -> Void) throws(GPUFailure)

    /// Waits (at most `timeout` seconds) until every fence created so far has signalled and its
    /// `completed` has run: before the queues stop, so no fenced chain is left behind.
    func drainFences(timeout: Double)

    /// Hands the cursor image of `id` (64×64 ARGB8888) to `deliver` without making the caller
    /// wait for the renderer: the cursor queue never waits behind the control queue.
    func withCursorImageAsync(_ id: ResourceID, into destination: CursorBuffer,
                              deliver: @escaping @Sendable (Result<Void, GPUFailure>) -> Void)
}

/// A 64×64 ARGB8888 image buffer shared between the cursor queue and a renderer thread.
public final class CursorBuffer: @unchecked Sendable {
    public let pixels: UnsafeMutableRawPointer
    public static let byteCount = 64 * 64 * 4
    public init() {
        pixels = UnsafeMutableRawPointer.allocate(byteCount: Self.byteCount, alignment: 16)
        pixels.initializeMemory(as: UInt8.self, repeating: 0, count: Self.byteCount)
    }
    deinit { pixels.deallocate() }
}

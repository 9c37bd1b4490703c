/// What went wrong in the virgl renderer. Each case prints as one line (`description`), fit for a
/// log or for the backend's exit message; the dispatcher maps cases to `VIRTIO_GPU_RESP_ERR_*`.
public enum VirglError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No EGL display or no GL context could be had (the reason from EGL, one line).
    case noGL(String)
    /// `virgl_renderer_init` failed (its return value).
    case initFailed(Int32)
    /// Another `VirglRenderer` is running: virglrenderer keeps global state, one per process.
    case alreadyRunning
    /// The renderer was shut down.
    case shutDown
    /// Capset id not served here (only VIRGL = 1 and VIRGL2 = 2), or it has no caps.
    case unknownCapset(UInt32)
    /// Capset version above the capset's max version.
    case unknownCapsetVersion(capset: UInt32, version: UInt32)
    /// Context id 0 is virglrenderer's own; ids above `Int32.max` do not fit its API.
    case invalidContextID(UInt32)
    case unknownContext(UInt32)
    case contextExists(UInt32)
    /// Resource id 0 is reserved; ids above `Int32.max` do not fit virglrenderer's API.
    case invalidResourceID(UInt32)
    case unknownResource(UInt32)
    case resourceExists(UInt32)
    case resourceAlreadyAttached(resource: UInt32, context: UInt32)
    case resourceNotAttached(resource: UInt32, context: UInt32)
    case backingAlreadyAttached(UInt32)
    case noBacking(UInt32)
    /// A transfer box, level or byte range that is not within the resource or the buffer given.
    case outOfBounds(String)
    /// A command stream whose length is not a whole number of 32-bit words.
    case commandStreamNotWordAligned(Int)
    /// virglrenderer refused a call: which one and the errno-style value it returned.
    case rendererFailed(call: String, code: Int32)
    /// Resource export to an fd is not possible here (the reason, one line).
    case exportUnavailable(resource: UInt32, reason: String)

    public var description: String {
        switch self {
        case .noGL(let why): "virgl: no OpenGL available: \(why)"
        case .initFailed(let rc): "virgl: virgl_renderer_init failed (\(rc))"
        case .alreadyRunning: "virgl: a renderer is already running in this process"
        case .shutDown: "virgl: the renderer has been shut down"
        case .unknownCapset(let id): "virgl: unknown capset \(id)"
        case .unknownCapsetVersion(let id, let v): "virgl: capset \(id) has no version \(v)"
        case .invalidContextID(let id): "virgl: context id \(id) is not usable"
        case .unknownContext(let id): "virgl: no context \(id)"
        case .contextExists(let id): "virgl: context \(id) already exists"
        case .invalidResourceID(let id): "virgl: resource id \(id) is not usable"
        case .unknownResource(let id): "virgl: no resource \(id)"
        case .resourceExists(let id): "virgl: resource \(id) already exists"
        case .resourceAlreadyAttached(let r, let c): "virgl: resource \(r) is already attached to context \(c)"
        case .resourceNotAttached(let r, let c): "virgl: resource \(r) is not attached to context \(c)"
        case .backingAlreadyAttached(let id): "virgl: resource \(id) already has backing"
        case .noBacking(let id): "virgl: resource \(id) has no backing"
        case .outOfBounds(let what): "virgl: out of bounds: \(what)"
        case .commandStreamNotWordAligned(let n): "virgl: command stream of \(n) bytes is not a whole number of dwords"
        case .rendererFailed(let call, let code): "virgl: \(call) failed (\(code))"
        case .exportUnavailable(let id, let why): "virgl: resource \(id) cannot be exported: \(why)"
        }
    }
}

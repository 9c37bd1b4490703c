import CVirglGlue
import Dispatch
import struct Synchronization.Atomic
import SystemSupport

/// How to get GL for virglrenderer.
public struct VirglRendererOptions: Sendable {
    /// A DRM render node (`/dev/dri/renderD128`): EGL over GBM on it. nil: Mesa's surfaceless
    /// EGL platform (llvmpipe where there is no GPU).
    public var renderNode: String?
    /// Receives virglrenderer's log lines (on the render thread). nil leaves them on stderr.
    public var log: (@Sendable (String) -> Void)?

    public init(renderNode: String? = nil, log: (@Sendable (String) -> Void)? = nil) {
        self.renderNode = renderNode
        self.log = log
    }
}

/// virgl 3D through libvirglrenderer, with EGL contexts this backend makes through libepoxy.
///
/// Threading rule: every virglrenderer call runs on one render thread this object owns. Other
/// threads hand it closures over a `VirglRendererCore`:
/// - `sync` waits for the result (the control queue, which must answer in order anyway);
/// - `run` suspends an async caller until the result is there;
/// - `post` queues and returns at once (nothing waits; the cursor queue's choice).
/// Jobs run one at a time in the order queued. Calling `sync` from inside a job runs inline.
///
/// virglrenderer keeps global state: one `VirglRenderer` per process at a time.
public final class VirglRenderer: Sendable {
    private static let instanceRunning = Atomic<Bool>(false)

    private let thread: RenderThread
    /// Touched only on `thread` (see the threading rule).
    private let core: HandOff<VirglRendererCore>
    private let isShutDown = Atomic<Bool>(false)

    /// GL_RENDERER, GL_VERSION and EGL platform ("surfaceless" or "gbm") in use.
    public let glRenderer: String
    public let glVersion: String
    public let platform: String

    /// Opens EGL and initializes virglrenderer on a new render thread. Throws `noGL` with a
    /// one-line reason when no GL can be had, `alreadyRunning` if another instance lives.
    public init(_ options: VirglRendererOptions = VirglRendererOptions()) throws(VirglError) {
        guard Self.instanceRunning.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else {
            throw .alreadyRunning
        }
        VirglLog.install(options.log)
        let thread = RenderThread(name: "virgl-render")
        let slot = ResultSlot<HandOff<VirglRendererCore>, VirglError>()
        let done = DispatchSemaphore(value: 0)
        let renderNode = options.renderNode
        thread.enqueue {
            // EGL and virgl_renderer_init on the render thread: contexts become current there.
            slot.result = Result { () throws(VirglError) in HandOff(try VirglRendererCore(renderNode: renderNode)) }
            done.signal()
        }
        done.wait()
        switch slot.result! {
        case .success(let core):
            self.thread = thread
            self.core = core
            glRenderer = core.value.glRenderer
            glVersion = core.value.glVersion
            platform = core.value.platform
        case .failure(let error):
            thread.stop()
            VirglLog.install(nil)
            Self.instanceRunning.store(false, ordering: .releasing)
            throw error
        }
    }

    deinit { shutdown() }

    /// Runs `body` on the render thread and waits for it; rethrows what `body` throws (the
    /// core's calls throw `VirglError`). Throws `VirglError.shutDown` after `shutdown`.
    public func sync<T>(_ body: (VirglRendererCore) throws -> T) throws -> T {
        if thread.isCurrent { return try body(core.value) }
        let outcome: Result<T, any Error> = withoutActuallyEscaping(body) { body in
            // The caller waits below, so `body` and the slot are never used on two threads at
            // once. The job drops `body` before signalling: nothing may hold it once this
            // block returns (withoutActuallyEscaping checks), even the queue's copy of the job.
            let borrowed = BorrowedJob(body)
            let core = self.core
            let done = DispatchSemaphore(value: 0)
            let queued = thread.enqueue {
                if let body = borrowed.body {
                    borrowed.result = Result { try body(core.value) }
                }
                borrowed.body = nil
                done.signal()
            }
            guard queued else { return .failure(VirglError.shutDown) }
            done.wait()
            return borrowed.result!
        }
        return try outcome.get()
    }

    /// Runs `body` on the render thread; the caller suspends (no thread blocks) until it is done.
    public func run<T: Sendable>(_ body: @escaping @Sendable (VirglRendererCore) throws -> T) async throws -> T {
        let core = self.core
        let outcome: Result<T, any Error> = await withCheckedContinuation { continuation in
            let queued = thread.enqueue {
                continuation.resume(returning: Result { try body(core.value) })
            }
            if !queued { continuation.resume(returning: .failure(VirglError.shutDown)) }
        }
        return try outcome.get()
    }

    /// Queues `body` on the render thread and returns at once. Returns false after `shutdown`.
    @discardableResult
    public func post(_ body: @escaping @Sendable (VirglRendererCore) -> Void) -> Bool {
        let core = self.core
        return thread.enqueue { body(core.value) }
    }

    /// Lets queued jobs finish, drops every context and resource, cleans virglrenderer up,
    /// closes EGL and ends the render thread. Idempotent. Waits for all that, except when
    /// called from inside a job (or when the last reference goes there): then it happens right
    /// after that job, and calls queued later fail with `shutDown`.
    public func shutdown() {
        guard !isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let core = self.core
        thread.stop(lastJob: {
            core.value.tearDown()
            // Only now may another renderer start: virglrenderer's globals are clean.
            VirglLog.install(nil)
            VirglRenderer.instanceRunning.store(false, ordering: .releasing)
        })
    }
}

/// A non-escaping closure lent to the render thread while its caller waits, and its result.
private final class BorrowedJob<T>: @unchecked Sendable {
    var body: ((VirglRendererCore) throws -> T)?
    var result: Result<T, any Error>?
    init(_ body: @escaping (VirglRendererCore) throws -> T) { self.body = body }
}

/// virglrenderer's log hook is one C function pointer per process: the Swift handler lives here.
enum VirglLog {
    private static let handler = ReplaceableCallback<String>()

    static func install(_ log: (@Sendable (String) -> Void)?) {
        handler.set(log)
        vgpu_virgl_set_log(log == nil ? nil : { line in
            guard let line else { return }
            let text = String(cString: line)
            VirglLog.handler(text)
        })
    }
}

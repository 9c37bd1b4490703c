import CShims
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// Runs a syscall-style call, retrying EINTR, turning -1 into `Errno`. The one place that
/// converts C error returns (swift-system's habit).
@inline(__always)
public func retryingEINTR<T: BinaryInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = Errno(rawValue: errno)
        if e != .interrupted { throw e }
    }
}

/// An fd closed when its last owner goes away. Used for everything the peer hands us, so
/// dropping a connection's state closes every fd it held.
public final class OwnedFileDescriptor: Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(_ raw: Int32) { rawValue = raw }
    public convenience init(_ fd: FileDescriptor) { self.init(fd.rawValue) }
    deinit { _ = Glibc.close(rawValue) }
    public var descriptor: FileDescriptor { FileDescriptor(rawValue: rawValue) }
    public var description: String { "fd \(rawValue)" }
}

/// An eventfd (kick, call, or an internal wake-up).
public enum EventFD {
    public static func make(nonBlocking: Bool = true) throws(Errno) -> OwnedFileDescriptor {
        let flags = Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0)
        return OwnedFileDescriptor(try retryingEINTR { eventfd(0, flags) })
    }

    /// Adds 1 to the counter. Errors (a closed peer) are ignored: a signal nobody waits for is harmless.
    public static func signal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { Glibc.write(fd, $0.baseAddress, 8) }
    }

    /// Reads and clears the counter; returns 0 if it was not signalled (non-blocking fd).
    @discardableResult
    public static func drain(_ fd: Int32) -> UInt64 {
        var value: UInt64 = 0
        let n = withUnsafeMutableBytes(of: &value) { Glibc.read(fd, $0.baseAddress, 8) }
        return n == 8 ? value : 0
    }
}

/// A shared mapping of a file, unmapped on deinit. Owns the fd (kept for exports later).
/// @unchecked: immutable after init; the mapped memory is shared with the guest by design.
public final class SharedFileMapping: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int
    public let file: OwnedFileDescriptor

    /// The SIGBUS guard slot over this mapping (`vgpu_sigbus_guard_register`), or -1.
    private let guardSlot: Int32
    /// The eventfd the guard signals on a fault, kept open as long as the guard can write to it.
    private let faultSignal: OwnedFileDescriptor?

    /// With `faultSignal`, a SIGBUS inside the mapping (its file shrank under it: an unsealed
    /// memfd a lying frontend truncated) is caught: zero pages replace the range, `faulted`
    /// turns true and `faultSignal` is signalled, instead of the process dying.
    public init(file: OwnedFileDescriptor, length: Int, writable: Bool = true, faultSignal: OwnedFileDescriptor? = nil) throws(Errno) {
        let prot = PROT_READ | (writable ? PROT_WRITE : 0)
        guard let p = mmap(nil, length, prot, MAP_SHARED, file.rawValue, 0), p != MAP_FAILED else {
            throw Errno(rawValue: errno)
        }
        var slot: Int32 = -1
        if let faultSignal {
            slot = vgpu_sigbus_guard_register(p, length, faultSignal.rawValue)
            guard slot >= 0 else {
                munmap(p, length)
                throw .tooManyOpenFiles   // every guard slot is in use
            }
        }
        base = p
        self.length = length
        self.file = file
        self.guardSlot = slot
        self.faultSignal = faultSignal
    }

    /// Whether a SIGBUS was caught in this mapping (it now reads zeros).
    public var faulted: Bool { guardSlot >= 0 && vgpu_sigbus_guard_faulted(guardSlot) != 0 }

    deinit {
        // The guard goes first: a fault after the munmap is not ours to catch.
        if guardSlot >= 0 { vgpu_sigbus_guard_unregister(guardSlot) }
        munmap(base, length)
    }
}

/// Seconds on the monotonic clock (deadlines, bounded waits).
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Starts a detached OS thread. Queue workers block in poll(2), so they get real threads rather
/// than tasks on Swift's cooperative pool.
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable { let body: @Sendable () -> Void; let name: String
        init(_ b: @escaping @Sendable () -> Void, _ n: String) { body = b; name = n } }
    let box = Unmanaged.passRetained(Box(body, name)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { arg in
        let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        vgpu_set_thread_name(box.name)
        box.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")   // resource exhaustion, not guest input
    pthread_detach(thread)
}

/// Runs `body(0..<count)` each on its own OS thread, named `name-i`, and returns when every one
/// has returned (the backend's listener threads, one per socket path).
public func runOnThreadsAndJoin(name: String, count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Box: @unchecked Sendable { let run: @Sendable () -> Void; let name: String
        init(_ r: @escaping @Sendable () -> Void, _ n: String) { run = r; name = n } }
    var threads: [pthread_t] = []
    for i in 0..<count {
        let box = Unmanaged.passRetained(Box({ body(i) }, "\(name)-\(i)")).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            vgpu_set_thread_name(box.name)
            box.run()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
}

// A callback one thread may replace while others call it.
//
// Why not `Mutex<(@Sendable (A) -> Void)?>`: a Mutex whose Value is itself a function type gets
// its stored closure wrapped in two more reabstraction thunks on every `withLock { $0 }` (the
// closure passed to the generic withLock writes its `inout` back through a thunk). Each call
// then runs through every thunk so far: the cost of a call and the stack depth grow with the
// number of earlier calls. Measured with Swift 6.3.1 (-Onone and -O alike): 40,000 reads took
// 12-13 s, and a guest drives one read per ASSIGN_UUID and per unref of a UUID'd resource, so
// enough of them would have overflowed the control-queue worker's stack (issue 11). Keeping the
// closure inside a struct fixes the abstraction: the same 40,000 reads take 2 ms and the depth
// stays put. SystemSupportTests pin that.

/// A replaceable `(Argument) -> Void`; calling it with none set does nothing.
public final class ReplaceableCallback<Argument>: Sendable {
    private struct Stored: Sendable {
        let call: @Sendable (Argument) -> Void
    }
    private let stored = Mutex<Stored?>(nil)

    public init() {}

    /// Sets (nil: clears) the callback.
    public func set(_ callback: (@Sendable (Argument) -> Void)?) {
        stored.withLock { $0 = callback.map(Stored.init) }
    }

    /// Calls the current callback, outside the lock (so it may call `set`).
    public func callAsFunction(_ argument: Argument) {
        stored.withLock { $0 }?.call(argument)
    }

    public var isSet: Bool { stored.withLock { $0 != nil } }
}

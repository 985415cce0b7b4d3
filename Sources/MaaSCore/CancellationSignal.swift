import Synchronization

/// A one-way flag that says a call's result is no longer wanted (deadline passed, client reset
/// the stream, connection closed), with handlers that run once when it is raised.
///
/// Work queued on other threads (a batcher, a compute pool) checks ``isCancelled`` before it
/// spends time on a call; async handlers register a handler that cancels their task.
public final class CancellationSignal: Sendable {
    private struct State {
        var isCancelled = false
        var handlers: [@Sendable () -> Void] = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Whether ``cancel()`` has been called.
    public var isCancelled: Bool {
        state.withLock { $0.isCancelled }
    }

    /// Runs `handler` once when the signal is raised; at once if it already was.
    public func onCancel(_ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            if state.isCancelled { return true }
            state.handlers.append(handler)
            return false
        }
        if runNow { handler() }
    }

    /// Raises the signal. Only the first call runs the handlers.
    public func cancel() {
        let handlers = state.withLock { state -> [@Sendable () -> Void] in
            guard !state.isCancelled else { return [] }
            state.isCancelled = true
            defer { state.handlers = [] }
            return state.handlers
        }
        for handler in handlers { handler() }
    }
}

import MaaSModels
import NIOCore
import NIOPosix

/// Gathers the inference calls that the HTTP/1.1 connections of one event loop decode while it
/// handles one round of readable sockets, and submits them together once that round is over:
/// clients that each keep one request in flight on their own connection then reach the batcher
/// in one hop per model, as the requests of one HTTP/2 connection do.
final class CallCoalescer {
    // Each thread reads and writes only its own value, so the (non-Sendable) coalescers are
    // never shared; the variable itself is thread-safe.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<CallCoalescer>()

    private var pending: [ObjectIdentifier: (core: InferenceCore, calls: [InferenceCore.Call])] = [:]

    /// The calling event loop thread's coalescer.
    static func current() -> CallCoalescer {
        if let existing = perThread.currentValue { return existing }
        let made = CallCoalescer()
        perThread.currentValue = made
        return made
    }

    /// On `eventLoop`, its own thread: `calls` go to `core` after the current round of I/O.
    func submit(_ calls: [InferenceCore.Call], to core: InferenceCore, on eventLoop: any EventLoop) {
        let key = ObjectIdentifier(core.repository)
        if pending.isEmpty {
            // Tasks run after the event loop has handled every socket that was ready.
            eventLoop.execute { [self] in flush() }
        }
        pending[key, default: (core, [])].calls += calls
    }

    private func flush() {
        let batches = pending
        pending.removeAll(keepingCapacity: true)
        for (core, calls) in batches.values {
            core.infer(calls)
        }
    }
}

@available(*, unavailable)
extension CallCoalescer: Sendable {}

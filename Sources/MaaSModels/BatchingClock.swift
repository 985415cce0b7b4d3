import Dispatch

/// Where a ``DynamicBatcher`` reads the time and arms its queue-delay timer. The server uses
/// ``SystemBatchingClock``; tests pass a clock they move by hand, so that a 200 ms batching
/// delay or a queue timeout costs them no real waiting.
public protocol BatchingClock: Sendable {
    var now: ContinuousClock.Instant { get }
    /// Calls `body` once, on any thread, when `delay` has passed on this clock.
    func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void)
}

/// The continuous clock, with timers on one Dispatch queue shared by every batcher (a timer
/// only decides whether a batch is due; the batch itself runs on the compute pool).
public struct SystemBatchingClock: BatchingClock {
    private static let timers = DispatchQueue(label: "maas.batcher.timers")

    public init() {}

    public var now: ContinuousClock.Instant { .now }

    public func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void) {
        let (seconds, attoseconds) = delay.components
        let nanos = max(Int(seconds * 1_000_000_000 + attoseconds / 1_000_000_000), 0)
        Self.timers.asyncAfter(deadline: .now() + .nanoseconds(nanos), execute: body)
    }
}

extension BatchingClock where Self == SystemBatchingClock {
    public static var system: SystemBatchingClock { SystemBatchingClock() }
}

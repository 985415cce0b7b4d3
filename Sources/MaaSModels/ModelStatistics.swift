public import CoreMetrics
import Glibc
import Synchronization

/// Counters with Triton's meaning: inference_count counts rows, execution_count batches.
///
/// Each record also updates the version's ``ModelMetrics`` (Triton's `nv_inference_*` names),
/// from the same values: microsecond counters advance by the change in the nanosecond totals'
/// whole microseconds, so a scrape reads exactly `nanoseconds / 1000` of the snapshot.
public final class ModelStatistics: Sendable {
    public struct Duration: Sendable, Hashable {
        public var count: UInt64 = 0
        public var nanoseconds: UInt64 = 0

        mutating func add(_ duration: Swift.Duration, count: UInt64 = 1) {
            self.count += count
            nanoseconds &+= duration.wholeNanoseconds
        }
    }

    public struct Snapshot: Sendable, Hashable {
        public var success = Duration()
        public var fail = Duration()
        public var queue = Duration()
        public var computeInput = Duration()
        public var computeInfer = Duration()
        public var computeOutput = Duration()
        public var inferenceCount: UInt64 = 0
        public var executionCount: UInt64 = 0
        /// Nanoseconds since the Unix epoch of the last successful inference, 0 if none.
        public var lastInference: UInt64 = 0
        /// Per batch size: how many batches ran and how long compute took.
        public var batches: [Int: Duration] = [:]
        /// Failed requests by reason (they sum to `fail.count`).
        public var failures: [FailureReason: UInt64] = [:]
        /// Requests queued or executing.
        public var pending: Int = 0
    }

    private let state = Mutex(Snapshot())
    /// The version's metric handles, made once at load.
    public let metrics: ModelMetrics

    /// - Parameters:
    ///   - model, version: the `model` and `version` labels of the version's metrics.
    ///   - factory: the metrics backend (the one the executable bootstrapped, by default).
    public init(model: String, version: Int64, factory: any MetricsFactory = MetricsSystem.factory) {
        metrics = ModelMetrics(model: model, version: version, factory: factory)
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// Whole microseconds gained by a nanosecond total.
    private static func micros(from before: UInt64, to after: UInt64) -> Int64 {
        Int64(truncatingIfNeeded: after / 1000 &- before / 1000)
    }

    /// `count` requests joined the queue.
    func recordQueued(_ count: Int) {
        guard count > 0 else { return }
        state.withLock { $0.pending += count }
        metrics.pending.increment(by: Double(count))
    }

    /// One batch of `items` requests and `size` rows: time spent gathering inputs, in the
    /// forward pass and splitting outputs (each counted once per request, as Triton does).
    func recordBatch(size: Int, items: Int, input: Swift.Duration, infer: Swift.Duration, output: Swift.Duration, queued: [Swift.Duration]) {
        let now = UInt64(max(0, clock_realtime_nanos()))
        let count = UInt64(items)
        let micros = state.withLock { s -> (success: Int64, queue: Int64, input: Int64, infer: Int64, output: Int64) in
            // Only the totals: a copy of the snapshot would make the batches table copy itself
            // (an allocation per batch) when it is written below.
            let before = (s.success.nanoseconds, s.queue.nanoseconds, s.computeInput.nanoseconds, s.computeInfer.nanoseconds, s.computeOutput.nanoseconds)
            s.executionCount += 1
            s.inferenceCount += UInt64(size)
            s.computeInput.add(input * items, count: count)
            s.computeInfer.add(infer * items, count: count)
            s.computeOutput.add(output * items, count: count)
            s.batches[size, default: Duration()].add(infer)
            for wait in queued {
                s.queue.add(wait)
                s.success.add(wait + input + infer + output)
            }
            s.lastInference = now
            s.pending -= items
            return (
                Self.micros(from: before.0, to: s.success.nanoseconds),
                Self.micros(from: before.1, to: s.queue.nanoseconds),
                Self.micros(from: before.2, to: s.computeInput.nanoseconds),
                Self.micros(from: before.3, to: s.computeInfer.nanoseconds),
                Self.micros(from: before.4, to: s.computeOutput.nanoseconds))
        }
        metrics.success.increment(by: items)
        metrics.inferenceCount.increment(by: size)
        metrics.executionCount.increment()
        metrics.requestDuration.increment(by: micros.success)
        metrics.queueDuration.increment(by: micros.queue)
        metrics.computeInputDuration.increment(by: micros.input)
        metrics.computeInferDuration.increment(by: micros.infer)
        metrics.computeOutputDuration.increment(by: micros.output)
        metrics.pending.decrement(by: Double(items))
        let compute = input + infer + output
        for wait in queued { metrics.latency.recordNanoseconds(Int64(truncatingIfNeeded: (wait + compute).wholeNanoseconds)) }
    }

    /// A request that had been queued failed after waiting `queued`.
    func recordFailure(queued: Swift.Duration, reason: FailureReason) {
        state.withLock { s in
            s.fail.add(queued)
            s.failures[reason, default: 0] += 1
            s.pending -= 1
        }
        metrics.failure(reason).increment()
        metrics.pending.decrement()
    }

    /// A request refused before it was queued: the model is unloading or its queue is full
    /// (``FailureReason/rejected``), or it does not fit the model (``FailureReason/other``).
    public func recordRefused(_ reason: FailureReason) {
        state.withLock { s in
            s.fail.add(.zero)
            s.failures[reason, default: 0] += 1
        }
        metrics.failure(reason).increment()
    }
}

extension Swift.Duration {
    /// Nanoseconds, 0 for a negative duration.
    var wholeNanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

private func clock_realtime_nanos() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

import Glibc
import Synchronization

/// Counters with Triton's meaning: inference_count counts rows, execution_count batches.
public final class ModelStatistics: Sendable {
    public struct Duration: Sendable, Hashable {
        public var count: UInt64 = 0
        public var nanoseconds: UInt64 = 0

        mutating func add(_ duration: Swift.Duration, count: UInt64 = 1) {
            self.count += count
            let (seconds, attoseconds) = duration.components
            nanoseconds &+= UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
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
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// One batch of `items` requests and `size` rows: time spent gathering inputs, in the
    /// forward pass and splitting outputs (each counted once per request, as Triton does).
    func recordBatch(size: Int, items: Int, input: Swift.Duration, infer: Swift.Duration, output: Swift.Duration, queued: [Swift.Duration]) {
        let now = UInt64(max(0, clock_realtime_nanos()))
        let count = UInt64(items)
        state.withLock { s in
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
        }
    }

    func recordFailure(queued: Swift.Duration) {
        state.withLock { $0.fail.add(queued) }
    }
}


private func clock_realtime_nanos() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
}

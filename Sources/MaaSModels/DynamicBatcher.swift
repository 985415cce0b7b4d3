import Dispatch
import MaaSCompute
public import MaaSCore
import Synchronization

/// One request's rows, validated and ready to be batched.
public struct BatchItem: Sendable {
    /// Every input with its batch dimension first (or whole, when the model does not batch).
    public let inputs: [String: Tensor]
    public let rows: Int
    /// Output names to return; empty means all.
    public let outputs: [String]
    /// Past this instant the caller no longer waits: the item is dropped before compute.
    public let deadline: ContinuousClock.Instant?
    public let cancellation: CancellationSignal?
    /// The request's own queue timeout (its `timeout` parameter), when the model's queue policy
    /// allows overriding the default.
    public let queueTimeout: Duration?
    public let enqueued: ContinuousClock.Instant
    public let complete: @Sendable (Result<[String: Tensor], InferenceError>) -> Void

    public init(
        inputs: [String: Tensor], rows: Int, outputs: [String], deadline: ContinuousClock.Instant?,
        cancellation: CancellationSignal?, queueTimeout: Duration? = nil,
        complete: @escaping @Sendable (Result<[String: Tensor], InferenceError>) -> Void
    ) {
        self.queueTimeout = queueTimeout
        self.inputs = inputs
        self.rows = rows
        self.outputs = outputs
        self.deadline = deadline
        self.cancellation = cancellation
        self.enqueued = .now
        self.complete = complete
    }

    /// Rows of different shapes (beyond the batch dimension) cannot share a batch.
    var shapeKey: [[Int]] {
        inputs.keys.sorted().map { Array(inputs[$0]!.shape.dropFirst()) }
    }
}

/// Triton-style dynamic batching for one model version: requests join a queue (under a lock,
/// from the event loop that decoded them); a batch forms when it reaches the preferred or
/// maximum size or when the oldest request has waited `max_queue_delay` (a Dispatch timer); one
/// forward pass runs at a time, on the compute pool, and its outputs are split back per
/// request. The pool thread that finishes a batch starts the next one if it is due, so a busy
/// model costs one hand-off per batch in and one per event loop out.
public final class DynamicBatcher: Sendable {
    let model: CompiledModel
    let maxBatchSize: Int
    let targetRows: Int
    let maxDelay: Duration
    let maxQueueItems: Int
    /// default_queue_policy.default_timeout_microseconds with timeout_action REJECT.
    let queueTimeout: Duration?
    /// default_queue_policy.allow_timeout_override: a request's `timeout` replaces the default.
    public let allowsTimeoutOverride: Bool
    let timers: DispatchQueue
    private let state = Mutex(State())
    public let statistics = ModelStatistics()

    private struct State {
        var pending: [BatchItem] = []
        var pendingRows = 0
        var executing = false
        var timerArmed = false
    }

    init(model: CompiledModel, config: ModelConfig, label: String) {
        self.model = model
        maxBatchSize = config.maxBatchSize
        let preferred = config.dynamicBatching?.preferredBatchSizes.filter { $0 > 0 && $0 <= max(config.maxBatchSize, 1) } ?? []
        targetRows = preferred.max() ?? max(config.maxBatchSize, 1)
        maxDelay = .microseconds(Int64(config.dynamicBatching?.maxQueueDelayMicroseconds ?? 0))
        let configured = Int(config.dynamicBatching?.defaultQueuePolicy?.maxQueueSize ?? 0)
        // Triton's 0 means unbounded; memory must stay bounded, so we cap it.
        maxQueueItems = configured > 0 ? configured : 10_000
        allowsTimeoutOverride = config.dynamicBatching?.defaultQueuePolicy?.allowTimeoutOverride ?? false
        if let policy = config.dynamicBatching?.defaultQueuePolicy, policy.defaultTimeoutMicroseconds > 0, policy.timeoutAction == .reject {
            queueTimeout = .microseconds(Int64(clamping: policy.defaultTimeoutMicroseconds))
        } else {
            queueTimeout = nil
        }
        timers = DispatchQueue(label: "maas.batcher.\(label)")
    }

    /// Queues validated requests; starts a batch on the pool if one is due.
    public func submit(_ items: [BatchItem]) {
        enqueue(items)
    }

    private func enqueue(_ items: [BatchItem]) {
        var rejected: [BatchItem] = []
        state.withLock { state in
            for item in items {
                if state.pending.count >= maxQueueItems {
                    rejected.append(item)
                } else {
                    state.pending.append(item)
                    state.pendingRows += item.rows
                }
            }
        }
        for item in rejected {
            statistics.recordFailure(queued: .zero)
            item.complete(.failure(InferenceError(.unavailable, "model queue is full (\(maxQueueItems) requests waiting)")))
        }
        dispatchIfReady()
    }

    /// Starts a batch when one is due, or arms the delay timer. Called from any thread.
    private func dispatchIfReady() {
        let now = ContinuousClock.now
        var expired: [BatchItem] = []
        let decision: (batch: [BatchItem], wait: Duration?) = state.withLock { state in
            // Requests whose caller has given up are dropped before any compute.
            state.pending.removeAll { item in
                let limit = (allowsTimeoutOverride ? item.queueTimeout : nil) ?? queueTimeout
                let timedOut = limit.map { now - item.enqueued >= $0 } ?? false
                let dead = timedOut || (item.deadline.map { $0 <= now } ?? false) || (item.cancellation?.isCancelled ?? false)
                if dead {
                    expired.append(item)
                    state.pendingRows -= item.rows
                }
                return dead
            }
            guard !state.executing, let oldest = state.pending.first else { return ([], nil) }
            let waited = now - oldest.enqueued
            let due = maxBatchSize == 0 || state.pendingRows >= targetRows || waited >= maxDelay
            guard due else {
                if state.timerArmed { return ([], nil) }
                state.timerArmed = true
                return ([], maxDelay - waited)
            }
            var batch: [BatchItem] = [state.pending.removeFirst()]
            var rows = batch[0].rows
            if maxBatchSize > 0 {
                let key = batch[0].shapeKey
                var index = 0
                while index < state.pending.count, rows < maxBatchSize {
                    let item = state.pending[index]
                    if rows + item.rows <= maxBatchSize && item.shapeKey == key {
                        batch.append(state.pending.remove(at: index))
                        rows += item.rows
                    } else {
                        index += 1
                    }
                }
            }
            state.pendingRows -= rows
            state.executing = true
            return (batch, nil)
        }
        for item in expired {
            let waited = now - item.enqueued
            statistics.recordFailure(queued: waited)
            let error: InferenceError
            if item.cancellation?.isCancelled ?? false {
                error = InferenceError(.cancelled, "request cancelled while queued")
            } else if let deadline = item.deadline, deadline <= now {
                error = InferenceError(.deadlineExceeded, "deadline exceeded while queued (waited \(waited))")
            } else {
                error = InferenceError(.unavailable, "request timed out in the model's queue after \(waited) (default_queue_policy)")
            }
            item.complete(.failure(error))
        }
        if let wait = decision.wait {
            let nanos = max(Int((wait.components.seconds * 1_000_000_000) + wait.components.attoseconds / 1_000_000_000), 0)
            timers.asyncAfter(deadline: .now() + .nanoseconds(nanos)) {
                self.state.withLock { $0.timerArmed = false }
                self.dispatchIfReady()
            }
        }
        if !decision.batch.isEmpty {
            let batch = decision.batch
            model.pool.async { self.execute(batch) }
        }
    }

    /// On a pool thread: one forward pass for the whole batch, outputs split back per request.
    private func execute(_ batch: [BatchItem]) {
        let start = ContinuousClock.now
        var timing = Timing()
        let result: Result<[[String: Tensor]], InferenceError>
        do {
            result = .success(try run(batch, timing: &timing))
        } catch {
            result = .failure(error)
        }
        // The next batch starts before this one's responses are encoded, so that encoding
        // overlaps the next forward pass instead of delaying it.
        state.withLock { $0.executing = false }
        dispatchIfReady()
        switch result {
        case .success(let outputs):
            statistics.recordBatch(
                size: batch.reduce(0) { $0 + $1.rows }, items: batch.count,
                input: timing.input, infer: timing.infer, output: timing.output,
                queued: batch.map { start - $0.enqueued })
            for (item, output) in zip(batch, outputs) { item.complete(.success(output)) }
        case .failure(let error):
            for item in batch {
                statistics.recordFailure(queued: start - item.enqueued)
                item.complete(.failure(error))
            }
        }
    }

    struct Timing {
        var input = Duration.zero
        var infer = Duration.zero
        var output = Duration.zero
    }

    private func run(_ batch: [BatchItem], timing: inout Timing) throws(InferenceError) -> [[String: Tensor]] {
        let clock = ContinuousClock()
        if batch.count == 1 {
            let start = clock.now
            let outputs = try model.run(batch[0].inputs)
            timing.infer = clock.now - start
            return [select(outputs, batch[0].outputs)]
        }
        let gatherStart = clock.now
        let totalRows = batch.reduce(0) { $0 + $1.rows }
        var feeds: [String: Tensor] = [:]
        for name in batch[0].inputs.keys {
            let first = batch[0].inputs[name]!
            var joined = try Tensor(zeros: first.dataType, shape: [totalRows] + first.shape.dropFirst())
            var offset = 0
            joined.withUnsafeMutableBytes { target in
                for item in batch {
                    item.inputs[name]!.withUnsafeBytes { source in
                        if source.count > 0 { (target.baseAddress! + offset).copyMemory(from: source.baseAddress!, byteCount: source.count) }
                        offset += source.count
                    }
                }
            }
            feeds[name] = joined
        }
        let inferStart = clock.now
        timing.input = inferStart - gatherStart
        let outputs = try model.run(feeds)
        let splitStart = clock.now
        timing.infer = splitStart - inferStart
        defer { timing.output = clock.now - splitStart }
        var results = [[String: Tensor]](repeating: [:], count: batch.count)
        for (name, tensor) in outputs {
            guard tensor.shape.first == totalRows else {
                throw InferenceError(.internal, "output '\(name)' has shape \(tensor.shape), which does not split into \(totalRows) batch rows")
            }
            let rowBytes = tensor.byteCount / max(totalRows, 1)
            var offset = 0
            for (index, item) in batch.enumerated() {
                var slice = try Tensor(zeros: tensor.dataType, shape: [item.rows] + tensor.shape.dropFirst())
                tensor.withUnsafeBytes { source in
                    slice.withUnsafeMutableBytes { target in
                        if target.count > 0 { target.baseAddress!.copyMemory(from: source.baseAddress! + offset, byteCount: target.count) }
                    }
                }
                offset += item.rows * rowBytes
                results[index][name] = slice
            }
        }
        return zip(batch, results).map { select($1, $0.outputs) }
    }

    private func select(_ outputs: [String: Tensor], _ names: [String]) -> [String: Tensor] {
        names.isEmpty ? outputs : outputs.filter { names.contains($0.key) }
    }
}

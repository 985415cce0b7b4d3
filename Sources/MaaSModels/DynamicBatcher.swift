import DequeModule
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
    /// Turns this request's model outputs into its response's (a text model's pooling), on the
    /// pool thread that ran the batch.
    public let finish: (@Sendable ([String: Tensor]) throws(InferenceError) -> [String: Tensor])?
    public let complete: @Sendable (Result<[String: Tensor], InferenceError>) -> Void
    /// Where the queue and compute times go for the access log (nil when it is off); written
    /// before ``complete`` is called.
    public let notes: RequestNotes?

    public init(
        inputs: [String: Tensor], rows: Int, outputs: [String], deadline: ContinuousClock.Instant?,
        cancellation: CancellationSignal?, queueTimeout: Duration? = nil,
        finish: (@Sendable ([String: Tensor]) throws(InferenceError) -> [String: Tensor])? = nil,
        notes: RequestNotes? = nil,
        complete: @escaping @Sendable (Result<[String: Tensor], InferenceError>) -> Void
    ) {
        self.queueTimeout = queueTimeout
        self.notes = notes
        self.finish = finish
        self.inputs = inputs
        self.rows = rows
        self.outputs = outputs
        self.deadline = deadline
        self.cancellation = cancellation
        self.complete = complete
    }
}

/// An item in the queue, with what batching compares computed once, outside the lock.
struct QueuedItem: Sendable {
    let item: BatchItem
    let enqueued: ContinuousClock.Instant
    /// Rows of different shapes (beyond the batch dimension) cannot share a batch: the inputs'
    /// trailing dims in name order, without the padded inputs' sequence axis.
    let shapeKey: [[Int]]
    /// The padded inputs' length along axis 1 (prepare checked that they agree), with padding.
    let length: Int

    init(_ item: BatchItem, enqueued: ContinuousClock.Instant, padded: Set<String>) {
        self.item = item
        self.enqueued = enqueued
        var length = 0
        shapeKey = item.inputs.sorted { $0.key < $1.key }.map { name, tensor in
            var dims = Array(tensor.shape.dropFirst())
            if padded.contains(name), !dims.isEmpty {
                length = dims[0]
                dims[0] = -1
            }
            return dims
        }
        self.length = length
    }

    var rows: Int { item.rows }
}

/// Triton-style dynamic batching for one model version: requests join a queue (under a lock,
/// from the event loop that decoded them); a batch forms when it reaches the preferred or
/// maximum size or when the oldest request has waited `max_queue_delay` (a timer on the
/// injected clock); one forward pass runs at a time, on the compute pool, and its outputs are
/// split back per request. The pool thread that finishes a batch starts the next one if it is
/// due, so a busy model costs one hand-off per batch in and one per event loop out.
///
/// - Important: call ``drain()`` (unload and shutdown do) before dropping a version: it refuses
///   new requests and runs what is queued at once, so that no caller waits on a model that is gone.
public final class DynamicBatcher: Sendable {
    let model: CompiledModel
    let label: String
    let maxBatchSize: Int
    let targetRows: Int
    let maxDelay: Duration
    let maxQueueItems: Int
    /// Without `max_queue_size`, the queue is also bounded by the work it holds: no more than
    /// this long at the last batch's pace, so that the bound follows the model's speed (a
    /// 100 ms transformer batch and a 10 µs MLP batch get the same wait, not the same count).
    let maxQueueWork: Duration?
    static let defaultQueueWork = Duration.seconds(5)
    /// default_queue_policy.default_timeout_microseconds with timeout_action REJECT.
    let queueTimeout: Duration?
    /// default_queue_policy.allow_timeout_override: a request's `timeout` replaces the default.
    public let allowsTimeoutOverride: Bool
    let clock: any BatchingClock
    /// Inputs padded along axis 1 so that requests of different lengths share a batch.
    let padding: ModelConfig.PaddedBatching?
    let paddedInputs: Set<String>
    private let state = Mutex(State())
    public let statistics: ModelStatistics

    private struct State {
        var pending = Deque<QueuedItem>()
        var pendingRows = 0
        /// A forward pass is running (one at a time).
        var executing = false
        /// Batches handed to the pool whose callers have not all been answered yet.
        var batchesInFlight = 0
        var timerArmed = false
        var stopped = false
        /// How long the last batch took, for telling shed requests when to come back.
        var lastBatchTime = Duration.zero
        var drainWaiters: [CheckedContinuation<Void, Never>] = []

        var isIdle: Bool { pending.isEmpty && batchesInFlight == 0 }
    }

    init(model: CompiledModel, config: ModelConfig, label: String, statistics: ModelStatistics, clock: any BatchingClock = .system) {
        self.model = model
        self.statistics = statistics
        self.label = label
        self.clock = clock
        maxBatchSize = config.maxBatchSize
        padding = config.maxBatchSize > 0 ? config.paddedBatching : nil
        paddedInputs = Set(padding?.padValues.keys ?? [:].keys)
        let preferred = config.dynamicBatching?.preferredBatchSizes.filter { $0 > 0 && $0 <= max(config.maxBatchSize, 1) } ?? []
        targetRows = preferred.max() ?? max(config.maxBatchSize, 1)
        maxDelay = .microseconds(Int64(config.dynamicBatching?.maxQueueDelayMicroseconds ?? 0))
        let configured = Int(config.dynamicBatching?.defaultQueuePolicy?.maxQueueSize ?? 0)
        // Triton's 0 means unbounded; memory must stay bounded, so we cap it.
        maxQueueItems = configured > 0 ? configured : 10_000
        maxQueueWork = configured > 0 ? nil : Self.defaultQueueWork
        allowsTimeoutOverride = config.dynamicBatching?.defaultQueuePolicy?.allowTimeoutOverride ?? false
        if let policy = config.dynamicBatching?.defaultQueuePolicy, policy.defaultTimeoutMicroseconds > 0, policy.timeoutAction == .reject {
            queueTimeout = .microseconds(Int64(clamping: policy.defaultTimeoutMicroseconds))
        } else {
            queueTimeout = nil
        }
    }

    /// Queues validated requests; starts a batch on the pool if one is due. After ``stop()``
    /// every item is answered UNAVAILABLE at once, or, with `returningIfStopped`, left
    /// unanswered and its index returned: a request that found this version just before a newer
    /// one replaced it can go to the newer one instead.
    @discardableResult
    public func submit(_ items: [BatchItem], returningIfStopped: Bool = false) -> [Int] {
        let now = clock.now
        let queued = items.map { QueuedItem($0, enqueued: now, padded: paddedInputs) }
        var rejected: [BatchItem] = []
        var returned: [Int] = []
        var overWork = false
        let (stopped, drainTime) = state.withLock { state in
            for (index, item) in queued.enumerated() {
                if state.stopped && returningIfStopped {
                    returned.append(index)
                } else if state.stopped || state.pending.count >= maxQueueItems {
                    rejected.append(item.item)
                } else if let budget = maxQueueWork, !state.pending.isEmpty, Self.work(state, targetRows) > budget {
                    rejected.append(item.item)
                    overWork = true
                } else {
                    state.pending.append(item)
                    state.pendingRows += item.rows
                }
            }
            return (state.stopped, Self.work(state, targetRows) + maxDelay)
        }
        statistics.recordQueued(queued.count - rejected.count - returned.count)
        for item in rejected {
            statistics.recordRefused(.rejected)
            if stopped {
                item.complete(.failure(InferenceError(.unavailable, "model '\(label)' is unloading and takes no new requests")))
            } else {
                let retry = min(max(drainTime, .milliseconds(1)), .seconds(60))
                let why = overWork
                    ? "its queue holds about \(Int((drainTime - maxDelay).inSeconds.rounded())) s of work at the last batch's pace (the bound without max_queue_size is \(Int(Self.defaultQueueWork.inSeconds)) s)"
                    : "its queue is full (\(maxQueueItems) requests waiting)"
                item.complete(.failure(InferenceError(.unavailable, "model '\(label)' is overloaded: \(why)", retryAfter: retry)))
            }
        }
        dispatchIfReady()
        return returned
    }

    /// How long the queue takes to empty: the batches it holds at the last batch's pace.
    private static func work(_ state: State, _ targetRows: Int) -> Duration {
        state.lastBatchTime * ((state.pendingRows + targetRows - 1) / max(targetRows, 1))
    }

    /// For tests: as if the last batch had taken `duration`.
    func setLastBatchTimeForTesting(_ duration: Duration) {
        state.withLock { $0.lastBatchTime = duration }
    }

    /// Refuses new requests from now on and makes everything queued due at once (without
    /// waiting for `max_queue_delay`): queued requests still run. Idempotent.
    public func stop() {
        state.withLock { $0.stopped = true }
        dispatchIfReady()
    }

    /// ``stop()``, then waits until every queued request has been answered.
    public func drain() async {
        stop()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let idle = state.withLock { state in
                if state.isIdle { return true }
                state.drainWaiters.append(done)
                return false
            }
            if idle { done.resume() }
        }
    }

    /// Starts a batch when one is due, or arms the delay timer. Called from any thread.
    private func dispatchIfReady() {
        let now = clock.now
        var expired: [QueuedItem] = []
        var drained: [CheckedContinuation<Void, Never>] = []
        let decision: (batch: [QueuedItem], wait: Duration?) = state.withLock { state in
            // Requests whose caller has given up are dropped before any compute.
            state.pending.removeAll { queued in
                let item = queued.item
                let limit = (allowsTimeoutOverride ? item.queueTimeout : nil) ?? queueTimeout
                let timedOut = limit.map { now - queued.enqueued >= $0 } ?? false
                let dead = timedOut || (item.deadline.map { $0 <= now } ?? false) || (item.cancellation?.isCancelled ?? false)
                if dead {
                    expired.append(queued)
                    state.pendingRows -= item.rows
                }
                return dead
            }
            if state.stopped && state.isIdle { swap(&drained, &state.drainWaiters) }
            guard !state.executing, let oldest = state.pending.first else { return ([], nil) }
            let waited = now - oldest.enqueued
            let due = state.stopped || maxBatchSize == 0 || state.pendingRows >= targetRows || waited >= maxDelay
            guard due else {
                if state.timerArmed { return ([], nil) }
                state.timerArmed = true
                return ([], maxDelay - waited)
            }
            let batch = takeBatch(from: &state.pending)
            state.pendingRows -= batch.reduce(0) { $0 + $1.rows }
            state.executing = true
            state.batchesInFlight += 1
            return (batch, nil)
        }
        for queued in expired {
            let item = queued.item
            let waited = now - queued.enqueued
            let error: InferenceError
            if item.cancellation?.isCancelled ?? false {
                error = InferenceError(.cancelled, "request cancelled while queued")
            } else if let deadline = item.deadline, deadline <= now {
                error = InferenceError(.deadlineExceeded, "deadline exceeded while queued (waited \(waited))")
            } else {
                error = InferenceError(.unavailable, "request timed out in the model's queue after \(waited) (default_queue_policy)")
            }
            statistics.recordFailure(queued: waited, reason: error.code == .unavailable ? .rejected : .canceled)
            item.notes?.batched(queued: waited, compute: nil)
            item.complete(.failure(error))
        }
        for waiter in drained { waiter.resume() }
        if let wait = decision.wait {
            clock.schedule(after: wait) {
                self.state.withLock { $0.timerArmed = false }
                self.dispatchIfReady()
            }
        }
        if !decision.batch.isEmpty {
            let batch = decision.batch
            model.pool.async { self.execute(batch) }
        }
    }

    /// The oldest item and, up to the maximum batch size, every later one of the same shapes;
    /// with padding, only those close enough in length (``closeInLength(_:)``).
    private func takeBatch(from pending: inout Deque<QueuedItem>) -> [QueuedItem] {
        let first = pending.removeFirst()
        guard maxBatchSize > 0 else { return [first] }
        var batch = [first]
        var rows = first.rows
        // Usually every queued request has the same shapes: they leave from the front.
        while rows < maxBatchSize, let next = pending.first, next.shapeKey == first.shapeKey, rows + next.rows <= maxBatchSize,
            padding == nil || next.length == first.length
        {
            batch.append(pending.removeFirst())
            rows += next.rows
        }
        guard rows < maxBatchSize, !pending.isEmpty else { return batch }
        // Otherwise one pass finds what could join from behind the items that cannot.
        let positions = pending.indices.filter { pending[$0].shapeKey == first.shapeKey }
        let candidates = positions.map { pending[$0] }
        let chosen = padding == nil
            ? Self.inOrder(candidates, rows: rows, maxRows: maxBatchSize)
            : Self.closeInLength(batch, candidates, maxRows: maxBatchSize)
        var taken = Set<Int>()
        for index in chosen {
            batch.append(candidates[index])
            taken.insert(positions[index])
        }
        // What stays keeps its queue order.
        pending = Deque(pending.indices.filter { !taken.contains($0) }.map { pending[$0] })
        return batch
    }

    /// The candidates that fit, in queue order.
    static func inOrder(_ candidates: [QueuedItem], rows: Int, maxRows: Int) -> [Int] {
        var rows = rows, chosen: [Int] = []
        for (index, candidate) in candidates.enumerated() where rows + candidate.rows <= maxRows {
            rows += candidate.rows
            chosen.append(index)
        }
        return chosen
    }

    /// Which candidates join `batch`, nearest in length first, while padding to the longest costs
    /// at most a tenth more tokens than the requests hold. Measured with MiniLM under 64 clients
    /// of 8-64 tokens: a quarter more gave 97 sentences/s, a tenth 115-121, a twentieth 109-112
    /// (batches too small); equal lengths, 128.
    static func closeInLength(_ batch: [QueuedItem], _ candidates: [QueuedItem], maxRows: Int) -> [Int] {
        let anchor = batch[0].length
        var longest = batch.map(\.length).max() ?? 0
        var rows = batch.reduce(0) { $0 + $1.rows }
        var tokens = batch.reduce(0) { $0 + $1.rows * $1.length }
        var chosen: [Int] = []
        for index in candidates.indices.sorted(by: { abs(candidates[$0].length - anchor) < abs(candidates[$1].length - anchor) }) {
            let candidate = candidates[index]
            let newLongest = max(longest, candidate.length)
            let newRows = rows + candidate.rows, newTokens = tokens + candidate.rows * candidate.length
            let padded = newRows * newLongest
            guard newRows <= maxRows, padded * 10 <= newTokens * 11 else { continue }
            (longest, rows, tokens) = (newLongest, newRows, newTokens)
            chosen.append(index)
        }
        return chosen
    }

    /// On a pool thread: one forward pass for the whole batch, outputs split back per request.
    private func execute(_ batch: [QueuedItem]) {
        let start = clock.now
        var timing = Timing()
        let items = batch.map(\.item)
        let result: Result<[[String: Tensor]], InferenceError>
        do {
            result = .success(try run(items, lengths: batch.map(\.length), timing: &timing))
        } catch {
            result = .failure(error)
        }
        // The next batch starts before this one's responses are encoded, so that encoding
        // overlaps the next forward pass instead of delaying it.
        let took = clock.now - start
        state.withLock {
            $0.executing = false
            $0.lastBatchTime = took
        }
        dispatchIfReady()
        switch result {
        case .success(let outputs):
            statistics.recordBatch(
                size: batch.reduce(0) { $0 + $1.rows }, items: batch.count,
                input: timing.input, infer: timing.infer, output: timing.output,
                queued: batch.map { start - $0.enqueued })
            for (queued, output) in zip(batch, outputs) {
                let item = queued.item
                item.notes?.batched(queued: start - queued.enqueued, compute: took)
                do throws(InferenceError) {
                    let finished = try item.finish?(output) ?? output
                    item.complete(.success(item.outputs.isEmpty ? finished : finished.filter { item.outputs.contains($0.key) }))
                } catch {
                    item.complete(.failure(error))
                }
            }
        case .failure(let error):
            for queued in batch {
                statistics.recordFailure(queued: start - queued.enqueued, reason: .backend)
                queued.item.notes?.batched(queued: start - queued.enqueued, compute: took)
                queued.item.complete(.failure(error))
            }
        }
        // A drain ends only once every caller has its answer.
        let drained: [CheckedContinuation<Void, Never>] = state.withLock { state in
            state.batchesInFlight -= 1
            guard state.stopped && state.isIdle else { return [] }
            defer { state.drainWaiters = [] }
            return state.drainWaiters
        }
        for waiter in drained { waiter.resume() }
    }

    struct Timing {
        var input = Duration.zero
        var infer = Duration.zero
        var output = Duration.zero
    }

    private func run(_ batch: [BatchItem], lengths queuedLengths: [Int], timing: inout Timing) throws(InferenceError) -> [[String: Tensor]] {
        let clock = ContinuousClock()
        if batch.count == 1 {
            let start = clock.now
            let outputs = try model.run(batch[0].inputs)
            timing.infer = clock.now - start
            return [outputs]
        }
        let gatherStart = clock.now
        // With padding, every padded input is as long as the batch's longest.
        let lengths = padding == nil ? nil : queuedLengths
        var feeds: [String: Tensor] = [:]
        for name in batch[0].inputs.keys {
            let pad = padding?.padValues[name]
            feeds[name] = try BatchAssembly.join(batch.map { $0.inputs[name]! }, length: pad == nil ? nil : lengths?.max(), pad: pad ?? 0)
        }
        let inferStart = clock.now
        timing.input = inferStart - gatherStart
        let outputs = try model.run(feeds)
        let splitStart = clock.now
        timing.infer = splitStart - inferStart
        defer { timing.output = clock.now - splitStart }
        var results = [[String: Tensor]](repeating: [:], count: batch.count)
        let trimmed = Set(padding?.trimmedOutputs ?? [])
        for (name, tensor) in outputs {
            let parts = try BatchAssembly.split(
                tensor, name: name, rows: batch.map(\.rows), lengths: trimmed.contains(name) ? lengths : nil)
            for (index, part) in parts.enumerated() { results[index][name] = part }
        }
        return results
    }
}

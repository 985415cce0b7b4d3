import CoreMetrics
import MaaSCompute
import MaaSCore
import MaaSModels
import MetricsTestKit
import Synchronization
import Testing

/// The `nv_inference_*` metrics against ModelStatistics, after a known mix of batches,
/// successes and failures of every reason the batcher sees.
@Suite("Model metrics")
struct ModelMetricsTests {
    let clock = ManualClock()
    let metrics = TestMetrics()
    let labels = [("model", "seed"), ("version", "1")]

    func model() async throws -> ModelVersion {
        let (_, root) = try TestRepository.make(
            config: #"{"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 20000, "default_queue_policy": {"max_queue_size": 8}}}"#)
        let repository = ModelRepository(path: root, clock: clock, metrics: metrics)
        try await repository.load("seed")
        return try repository.version("seed", "")
    }

    /// Submits the items, moves the clock past the batching delay and waits for every answer.
    func run(_ model: ModelVersion, _ make: (_ done: @escaping @Sendable (Bool) -> Void) throws -> [BatchItem]) async throws -> (ok: Int, failed: Int) {
        let state = Mutex((remaining: 0, ok: 0, failed: 0))
        try await withCheckedThrowingContinuation { (finished: CheckedContinuation<Void, any Error>) in
            do {
                let items = try make { ok in
                    let last = state.withLock { state in
                        if ok { state.ok += 1 } else { state.failed += 1 }
                        state.remaining -= 1
                        return state.remaining == 0
                    }
                    if last { finished.resume() }
                }
                state.withLock { $0.remaining = items.count }
                model.batcher.submit(items)
                clock.advance(by: .milliseconds(20))
            } catch {
                finished.resume(throwing: error)
            }
        }
        return state.withLock { ($0.ok, $0.failed) }
    }

    func item(rows: Int, width: Int = 10, deadline: ContinuousClock.Instant? = nil, cancellation: CancellationSignal? = nil, done: @escaping @Sendable (Bool) -> Void) throws -> BatchItem {
        let x = try Tensor([Float](repeating: 0.5, count: rows * width), shape: [rows, width])
        return BatchItem(inputs: ["input": x], rows: rows, outputs: [], deadline: deadline, cancellation: cancellation) { result in
            if case .success = result { done(true) } else { done(false) }
        }
    }

    func counter(_ name: String, _ extra: [(String, String)] = []) throws -> Int64 {
        try metrics.expectCounter(name, labels + extra).totalValue
    }

    @Test("counters, durations, pending and the latency histogram agree with ModelStatistics")
    func agreeWithStatistics() async throws {
        let model = try await model()
        // Two batches: 1+2+3+4+5 rows, then three of 2 rows.
        #expect(try await run(model) { done in try (1...5).map { try item(rows: $0, done: done) } } == (5, 0))
        #expect(try await run(model) { done in try (0..<3).map { _ in try item(rows: 2, done: done) } } == (3, 0))
        // Nine at once into a queue of eight: one REJECTED, eight run as one batch.
        #expect(try await run(model) { done in try (0..<9).map { _ in try item(rows: 1, done: done) } } == (8, 1))
        // CANCELED twice: a deadline that passes in the queue, a caller that cancelled.
        let cancelled = CancellationSignal()
        cancelled.cancel()
        #expect(try await run(model) { done in
            [try item(rows: 1, deadline: clock.now + .milliseconds(5), done: done), try item(rows: 1, cancellation: cancelled, done: done)]
        } == (0, 2))
        // BACKEND: rows of the wrong width reach the forward pass (validation is bypassed here).
        #expect(try await run(model) { done in [try item(rows: 1, width: 7, done: done)] } == (0, 1))

        let stats = model.batcher.statistics.snapshot
        #expect(stats.success.count == 16 && stats.executionCount == 3 && stats.inferenceCount == 29)
        #expect(stats.failures == [.rejected: 1, .canceled: 2, .backend: 1] && stats.fail.count == 4)

        #expect(try counter(ModelMetrics.Name.requestSuccess) == Int64(stats.success.count))
        #expect(try counter(ModelMetrics.Name.inferenceCount) == Int64(stats.inferenceCount))
        #expect(try counter(ModelMetrics.Name.executionCount) == Int64(stats.executionCount))
        var failures: Int64 = 0
        for reason in FailureReason.allCases {
            let value = try counter(ModelMetrics.Name.requestFailure, [("reason", reason.rawValue)])
            #expect(value == Int64(stats.failures[reason] ?? 0), "reason \(reason.rawValue)")
            failures += value
        }
        #expect(failures == Int64(stats.fail.count))
        // Cumulative microseconds are exactly the nanosecond totals' whole microseconds.
        let durations: [(String, ModelStatistics.Duration)] = [
            (ModelMetrics.Name.requestDuration, stats.success), (ModelMetrics.Name.queueDuration, stats.queue),
            (ModelMetrics.Name.computeInputDuration, stats.computeInput), (ModelMetrics.Name.computeInferDuration, stats.computeInfer),
            (ModelMetrics.Name.computeOutputDuration, stats.computeOutput),
        ]
        for (name, duration) in durations {
            #expect(try counter(name) == Int64(duration.nanoseconds / 1000), "\(name)")
        }
        #expect(stats.queue.nanoseconds >= 16 * 20_000_000, "each success waited the 20 ms delay")
        #expect(stats.pending == 0)
        #expect(try metrics.expectMeter(ModelMetrics.Name.pendingRequests, labels).lastValue == 0)
        let latency = try metrics.expectTimer(ModelMetrics.Name.requestLatency, labels).values
        #expect(latency.count == 16)
        #expect(UInt64(latency.reduce(0, +)) == stats.success.nanoseconds)
    }

    @Test("a request refused before its queue counts as failed, with its reason")
    func refused() async throws {
        let model = try await model()
        model.batcher.statistics.recordRefused(.other)
        let stats = model.batcher.statistics.snapshot
        #expect(stats.fail.count == 1 && stats.failures == [.other: 1] && stats.pending == 0)
        #expect(try counter(ModelMetrics.Name.requestFailure, [("reason", "OTHER")]) == 1)
    }
}

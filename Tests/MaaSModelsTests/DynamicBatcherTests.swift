import MaaSCompute
import MaaSCore
import MaaSModels
import Synchronization
import Testing

/// The batcher on a clock the tests move: delays and timeouts cost no real time.
@Suite("Dynamic batching")
struct DynamicBatcherTests {
    let clock = ManualClock()

    func model(config: String) async throws -> ModelVersion {
        let (repo, _) = try TestRepository.make(config: config, clock: clock)
        try await repo.load("seed")
        return try repo.version("seed", "")
    }

    func item(rows: Int = 1, deadline: ContinuousClock.Instant? = nil, queueTimeout: Duration? = nil, answers: Answers, key: Int, done: @escaping @Sendable () -> Void = {}) throws -> BatchItem {
        let x = try Tensor((0..<(rows * 10)).map { Float($0) / 10 }, shape: [rows, 10])
        return BatchItem(inputs: ["input": x], rows: rows, outputs: [], deadline: deadline, cancellation: nil, queueTimeout: queueTimeout) { result in
            answers.record(key, result)
            done()
        }
    }

    /// Submits `items`, then moves the clock by `advance`, and returns once all are answered.
    func run(_ model: ModelVersion, advance: Duration, _ items: (@escaping @Sendable () -> Void) throws -> [BatchItem]) async throws {
        let remaining = Mutex(0)
        try await withCheckedThrowingContinuation { (finished: CheckedContinuation<Void, any Error>) in
            do {
                let batch = try items { if remaining.withLock({ $0 -= 1; return $0 }) == 0 { finished.resume() } }
                remaining.withLock { $0 = batch.count }
                model.batcher.submit(batch)
                clock.advance(by: advance)
            } catch {
                finished.resume(throwing: error)
            }
        }
    }

    @Test("queued requests join one forward pass when the delay has passed; outputs are split back")
    func batching() async throws {
        let model = try await model(config: #"{"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 20000}}"#)
        let answers = Answers()
        try await run(model, advance: .milliseconds(20)) { done in
            try (1...5).map { try item(rows: $0, answers: answers, key: $0, done: done) }
        }
        #expect(answers.all == [1: .success([1, 10]), 2: .success([2, 10]), 3: .success([3, 10]), 4: .success([4, 10]), 5: .success([5, 10])])
        let stats = model.batcher.statistics.snapshot
        #expect(stats.inferenceCount == 15)
        #expect(stats.executionCount == 1)
        #expect(stats.batches[15]?.count == 1)
    }

    @Test("a full queue answers UNAVAILABLE and a passed deadline DEADLINE_EXCEEDED, before compute")
    func queueLimits() async throws {
        let model = try await model(config: #"{"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 200000, "default_queue_policy": {"max_queue_size": 1}}}"#)
        let answers = Answers()
        // The first waits for the 200 ms batching delay, but its deadline comes after 5 ms.
        try await run(model, advance: .milliseconds(200)) { done in
            [try item(deadline: clock.now + .milliseconds(5), answers: answers, key: 1, done: done), try item(answers: answers, key: 2, done: done)]
        }
        #expect(answers.all[1] == .failure(InferenceError(.deadlineExceeded, "deadline exceeded while queued (waited 0.2 seconds)")))
        // Shed with when to retry: the queue's batches at the last batch's pace (none ran yet) plus
        // the batching delay.
        #expect(answers.all[2] == .failure(InferenceError(
            .unavailable, "model 'seed:1' is overloaded: its queue is full (1 requests waiting)", retryAfter: .milliseconds(200))))
        #expect(model.batcher.statistics.snapshot.executionCount == 0)
    }

    @Test("a request's own queue timeout applies only when the policy allows overriding", arguments: [true, false])
    func timeoutOverride(allowed: Bool) async throws {
        let model = try await model(config: """
            {"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 100000,
             "default_queue_policy": {"default_timeout_microseconds": 60000000, "allow_timeout_override": \(allowed)}}}
            """)
        let answers = Answers()
        try await run(model, advance: .milliseconds(100)) { done in
            [try item(queueTimeout: .milliseconds(1), answers: answers, key: 1, done: done)]
        }
        // Allowed: 1 ms < the 100 ms batching delay, so it times out; otherwise it runs after the delay.
        let code: StatusCode = switch answers.all[1] {
        case .success?: .ok
        case .failure(let error)?: error.code
        case nil: .unknown
        }
        #expect(code == (allowed ? .unavailable : .ok))
    }

    @Test("drain runs what is queued without waiting for the delay, then refuses new requests")
    func drain() async throws {
        let model = try await model(config: #"{"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 10000000}}"#)
        let answers = Answers()
        // Two rows of sixteen: without the drain they would wait 10 s the clock never reaches.
        model.batcher.submit([try item(answers: answers, key: 1), try item(answers: answers, key: 2)])
        #expect(await finishes { await model.batcher.drain() })
        #expect(answers.all == [1: .success([1, 10]), 2: .success([1, 10])], "every queued request is answered when drain returns")
        #expect(model.batcher.statistics.snapshot.executionCount == 1)

        model.batcher.submit([try item(answers: answers, key: 3)])
        #expect(answers.all[3] == .failure(InferenceError(.unavailable, "model 'seed:1' is unloading and takes no new requests")))
        #expect(await finishes { await model.batcher.drain() }, "again: nothing left, it returns at once")
    }
}

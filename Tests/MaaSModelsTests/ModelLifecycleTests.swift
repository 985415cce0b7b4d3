import MaaSCompute
import MaaSCore
@testable import MaaSModels
import Testing

/// Loads and unloads as RepositoryIndex shows them while they happen. A one-thread pool held
/// by a ``PoolGate`` keeps a warm-up pass or a batch waiting, so a step stays under way.
@Suite("Model lifecycle")
struct ModelLifecycleTests {
    func entry(_ version: String, _ state: ModelRepository.State, _ reason: String = "") -> ModelRepository.Entry {
        ModelRepository.Entry(name: "seed", version: version, state: state, reason: reason)
    }

    @Test("a load shows LOADING while it compiles; a second load of the model waits its turn")
    func serialisedLoads() async throws {
        let pool = ComputePool(threadCount: 1)
        let (repo, root) = try TestRepository.make(pool: pool)
        let gate = PoolGate(closing: pool)
        let first = Task { try await repo.load("seed").map(\.version) }
        try await eventually("the first load is under way") { repo.index() == [entry("", .loading, "loading")] }
        #expect(throws: InferenceError(.unavailable, "model 'seed' is not ready: it is loading")) { try repo.version("seed", "") }

        // Version 2 appears while the first load is under way (it may or may not list it yet);
        // the second load starts after it and must see version 2, and it is the second's
        // result that stays: loads that ran side by side could finish in either order.
        try TestRepository.addVersion(2, in: root)
        let second = Task { try await repo.load("seed").map(\.version) }
        try await eventually("the second load waits for the first") { repo.waitingOperations("seed") == 1 }
        #expect(repo.index() == [entry("", .loading, "loading")])

        gate.open()
        _ = try await first.value
        #expect(try await second.value == [2])
        #expect(repo.index() == [entry("2", .ready)])
        #expect(try repo.version("seed", "").version == 2)
    }

    @Test("a reload keeps the old version serving until the new one is ready")
    func reloadKeepsServing() async throws {
        let pool = ComputePool(threadCount: 1)
        let (repo, root) = try TestRepository.make(pool: pool)
        try await repo.load("seed")
        try TestRepository.addVersion(2, in: root)
        let gate = PoolGate(closing: pool)
        let reload = Task { try await repo.load("seed").map(\.version) }
        try await eventually("the reload is under way") { repo.index().contains(entry("", .loading, "loading")) }
        #expect(repo.index() == [entry("1", .ready), entry("", .loading, "loading")])
        #expect(try repo.version("seed", "").version == 1)
        gate.open()
        #expect(try await reload.value == [2])
        #expect(repo.loadedVersions().map(\.version) == [2])
    }

    @Test("unload shows UNLOADING until queued requests are answered, and refuses new ones")
    func unloadDrains() async throws {
        let pool = ComputePool(threadCount: 1)
        let clock = ManualClock()
        let (repo, _) = try TestRepository.make(
            config: #"{"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 10000000}}"#, pool: pool, clock: clock)
        let model = try await repo.load("seed")[0]
        let answers = Answers()
        let x = try Tensor([Float](repeating: 0, count: 10), shape: [1, 10])
        let item = { (key: Int) in
            BatchItem(inputs: ["input": x], rows: 1, outputs: [], deadline: nil, cancellation: nil) { answers.record(key, $0) }
        }
        // Queued for 10 s that the clock never reaches; only the unload's drain can run it.
        model.batcher.submit([item(1)])
        let gate = PoolGate(closing: pool)
        let unloading = Task { await repo.unload("seed") }
        try await eventually("the unload is under way") { repo.index() == [entry("1", .unloading, "finishing queued requests")] }
        #expect(answers.all.isEmpty, "the queued request runs behind the gate")
        #expect(throws: InferenceError(.unavailable, "model 'seed' is not ready: it is unloading")) { try repo.version("seed", "") }
        model.batcher.submit([item(2)])
        #expect(answers.all[2] == .failure(InferenceError(.unavailable, "model 'seed:1' is unloading and takes no new requests")))

        gate.open()
        #expect(await finishes { await unloading.value })
        #expect(answers.all[1] == .success([1, 10]), "answered before unload returned")
        #expect(repo.index() == [entry("", .unavailable, "unloaded")])
        #expect(throws: InferenceError(.notFound, "unknown model 'seed'")) { try repo.version("seed", "") }
    }

    @Test("a request that found a version just before a reload replaced it is handed back, not refused")
    func replacedVersionHandsBack() async throws {
        let (repo, root) = try TestRepository.make()
        let old = try await repo.load("seed")[0]
        try TestRepository.addVersion(2, in: root)
        _ = try await repo.load("seed")
        #expect(try repo.version("seed", "").version == 2)
        let answers = Answers()
        let x = try Tensor([Float](repeating: 0, count: 10), shape: [1, 10])
        let item = { (key: Int) in
            BatchItem(inputs: ["input": x], rows: 1, outputs: [], deadline: nil, cancellation: nil) { answers.record(key, $0) }
        }
        #expect(old.batcher.submit([item(1), item(2)], returningIfStopped: true) == [0, 1])
        #expect(answers.all.isEmpty)
        old.batcher.submit([item(3)])
        #expect(answers.all[3] == .failure(InferenceError(.unavailable, "model 'seed:1' is unloading and takes no new requests")))
    }

    @Test("without max_queue_size the queue holds at most 5 s of work at the last batch's pace")
    func queueBoundFollowsModelSpeed() async throws {
        let (repo, _) = try TestRepository.make(
            config: #"{"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 10000000}}"#, clock: ManualClock())
        let model = try await repo.load("seed")[0]
        model.batcher.setLastBatchTimeForTesting(.seconds(1))
        let answers = Answers()
        let x = try Tensor([Float](repeating: 0, count: 10), shape: [1, 10])
        // Batches of 4 rows at 1 s each: 20 queued rows are 5 s of work, 21 are 6 s.
        model.batcher.submit((1...25).map { key in
            BatchItem(inputs: ["input": x], rows: 1, outputs: [], deadline: nil, cancellation: nil) { answers.record(key, $0) }
        })
        let shed = answers.all.filter { $0.value != .success([1, 10]) }
        #expect(shed.keys.sorted() == [22, 23, 24, 25])
        #expect(shed[22] == .failure(InferenceError(
            .unavailable, "model 'seed:1' is overloaded: its queue holds about 6 s of work at the last batch's pace (the bound without max_queue_size is 5 s)",
            retryAfter: .seconds(16))))
        await repo.unloadAll()
        #expect(answers.all.count == 25)
    }

    @Test("unloadAll (shutdown) answers every queued request first")
    func unloadAll() async throws {
        let (repo, _) = try TestRepository.make(
            config: #"{"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 10000000}}"#, clock: ManualClock())
        let model = try await repo.load("seed")[0]
        let answers = Answers()
        let x = try Tensor([Float](repeating: 0, count: 20), shape: [2, 10])
        model.batcher.submit([BatchItem(inputs: ["input": x], rows: 2, outputs: [], deadline: nil, cancellation: nil) { answers.record(1, $0) }])
        #expect(await finishes { await repo.unloadAll() })
        #expect(answers.all == [1: .success([2, 10])])
        #expect(repo.loadedVersions().isEmpty)
    }
}

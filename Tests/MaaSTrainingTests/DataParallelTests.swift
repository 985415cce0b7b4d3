import Glibc
import MaaSCompute
import MaaSCore
import MaaSTestSupport
@testable import MaaSTraining
import Synchronization
import Testing

/// Ranks as threads of one process: the sum is taken in rank order from a shared staging area,
/// so every rank gets the same bits, as MPI_Allreduce gives them.
private final class ThreadGroup: @unchecked Sendable {
    let size: Int
    private let barrier = UnsafeMutablePointer<pthread_barrier_t>.allocate(capacity: 1)
    /// Raw buffers, not arrays: ranks write their own elements at once, and an Array is one
    /// shared variable (its copy-on-write check would race).
    private let staging: UnsafeMutableBufferPointer<[Float]>
    private let hashes: UnsafeMutableBufferPointer<UInt64>

    init(size: Int) {
        self.size = size
        staging = .allocate(capacity: size)
        staging.initialize(repeating: [])
        hashes = .allocate(capacity: size)
        hashes.initialize(repeating: 0)
        pthread_barrier_init(barrier, nil, UInt32(size))
    }

    deinit {
        pthread_barrier_destroy(barrier)
        barrier.deallocate()
        staging.deinitialize()
        staging.deallocate()
        hashes.deallocate()
    }

    func wait() { pthread_barrier_wait(barrier) }

    func sum(rank: Int, _ values: UnsafeMutablePointer<Float>, count: Int) {
        staging[rank] = Array(UnsafeBufferPointer(start: values, count: count))
        wait()
        for index in 0..<count {
            var total: Float = 0
            for other in 0..<size { total += staging[other][index] }
            values[index] = total
        }
        wait()
    }

    func gather(rank: Int, _ value: UInt64) -> [UInt64] {
        hashes[rank] = value
        wait()
        let all = Array(hashes)
        wait()
        return all
    }

    final class Rank: DataParallelGroup {
        let group: ThreadGroup
        let rank: Int
        var size: Int { group.size }
        /// Added to this rank's gradient once, at this step, to make it drift from the others.
        var corruptAtCall: Int?
        private var calls = 0

        init(_ group: ThreadGroup, rank: Int) {
            self.group = group
            self.rank = rank
        }

        func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) {
            calls += 1
            group.sum(rank: rank, values, count: count)
            if calls == corruptAtCall { values[0] += 1e-3 }
        }

        func allGather(_ value: UInt64) -> [UInt64] { group.gather(rank: rank, value) }
    }
}

private final class ThreadBody: @unchecked Sendable {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// Runs `body` for every rank on its own thread (each rank a Trainer on its own one-thread pool).
private func onRanks<Result: Sendable>(_ size: Int, _ body: @escaping @Sendable (Int) -> Result) -> [Result] {
    let results = Mutex<[Int: Result]>([:])
    var threads: [pthread_t] = []
    for rank in 0..<size {
        let box = ThreadBody { let value = body(rank); results.withLock { $0[rank] = value } }
        var thread = pthread_t()
        pthread_create(&thread, nil, { context in
            Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue().run()
            return nil
        }, Unmanaged.passRetained(box).toOpaque())
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
    return results.withLock { dictionary in (0..<size).map { dictionary[$0]! } }
}

@Suite("Data-parallel training")
struct DataParallelTests {
    @Test(arguments: [(rows: 962, batch: 64, size: 3), (rows: 10, batch: 4, size: 3), (rows: 7, batch: 0, size: 2), (rows: 5, batch: 2, size: 4)])
    func sharesCoverEveryStepOnce(_ geometry: (rows: Int, batch: Int, size: Int)) {
        let shares = (0..<geometry.size).map {
            DataShare(totalRows: geometry.rows, rank: $0, size: geometry.size, batchSize: geometry.batch, shuffle: false)
        }
        // Each step's rows are cut into contiguous slices, one per rank, in rank order.
        let batch = shares[0].batch
        for step in 0..<shares[0].stepsPerEpoch {
            let count = min(batch, geometry.rows - step * batch)
            let slices = shares.map { $0.slice(ofStepRows: count) }
            #expect(slices.first!.lowerBound == 0 && slices.last!.upperBound == count)
            for (left, right) in zip(slices, slices.dropFirst()) { #expect(left.upperBound == right.lowerBound) }
        }
        // Without shuffling, together the ranks load every row exactly once.
        let loaded = shares.flatMap { $0.rowsToLoad.flatMap { Array($0) } }
        #expect(loaded.sorted() == Array(0..<geometry.rows))
        // A full batch is one contiguous shard per rank.
        if geometry.batch == 0 { #expect(shares.allSatisfy { $0.rowsToLoad.count == 1 }) }
        // Shuffling hands a rank different rows each epoch, so it needs them all.
        #expect(DataShare(totalRows: geometry.rows, rank: 0, size: geometry.size, batchSize: geometry.batch, shuffle: true).rowsToLoad == [0..<geometry.rows])
    }

    static let recipes: [(name: String, options: FitOptions, size: Int)] = [
        ("seed_sgd_minibatch", FitOptions(epochs: 3, batchSize: 100), 2),
        ("seed_sgd_minibatch", FitOptions(epochs: 3, batchSize: 64, shuffle: true, seed: 5), 3),
        ("seed_sgd_minibatch", FitOptions(epochs: 2), 4),
        // Steps of 2 rows over 3 ranks: rank 0 never has a row and adds a zero gradient.
        ("seed_sgd_minibatch", FitOptions(epochs: 1, batchSize: 2, shuffle: true, seed: 9), 3),
    ]

    /// The ranks run the single process's steps on the same rows. The gradient's terms are
    /// summed in another order (per rank, then over ranks), so the losses agree within the
    /// 2·γ_D of PyTorchRunTests (D = 30 for 10-20-10), not bit for bit; and every rank ends
    /// with the same parameters, bit for bit, since each applies the same summed gradient.
    @Test(arguments: 0..<recipes.count)
    func ranksTrainWhatOneProcessTrains(_ index: Int) throws {
        let recipe = Self.recipes[index]
        var momentum = OptimizerConfiguration(kind: .sgd, learningRate: 0.05)
        momentum.momentum = 0.9
        let sgd = momentum
        let model = try Fixtures.model(recipe.name, "init", sizes: [10, 20, 10])
        let data = try Fixtures.data(recipe.name)
        let single = try Trainer(model: model, loss: .mse, optimizer: sgd, pool: ComputePool(threadCount: 1)).fit(data, options: recipe.options)

        let group = ThreadGroup(size: recipe.size)
        let options = recipe.options
        let results = onRanks(recipe.size) { rank -> [Float]? in
            let share = DataShare(totalRows: data.rows, rank: rank, size: group.size, batchSize: options.batchSize, shuffle: options.shuffle)
            let result: FitResult
            do {
                let trainer = try Trainer(model: model, loss: .mse, optimizer: sgd, pool: ComputePool(threadCount: 1))
                result = try trainer.fit(data.rows(in: share.rowsToLoad), share: share, options: options, group: ThreadGroup.Rank(group, rank: rank))
            } catch {
                Issue.record("rank \(rank): \(error)")
                return nil
            }
            #expect(result.losses.count == single.losses.count)
            let worst = worstRelativeError(result.losses, single.losses, floor: 0)
            #expect(worst.error <= 2 * ErrorBound.gamma(30), "rank \(rank) step \(worst.index): \(result.losses[worst.index]) vs \(single.losses[worst.index])")
            return result.model.parameters
        }
        let parameters = try #require(results.first ?? nil)
        #expect(results.allSatisfy { $0 == parameters })
    }

    @Test func ranksThatDriftApartAreStoppedWithTheirHashes() throws {
        let model = try Fixtures.model("seed_sgd_minibatch", "init", sizes: [10, 20, 10])
        let data = try Fixtures.data("seed_sgd_minibatch")
        let group = ThreadGroup(size: 2)
        let messages = onRanks(2) { rank -> String? in
            let share = DataShare(totalRows: data.rows, rank: rank, size: 2, batchSize: 100, shuffle: false)
            let member = ThreadGroup.Rank(group, rank: rank)
            if rank == 1 { member.corruptAtCall = 7 }
            do {
                let trainer = try Trainer(model: model, loss: .mse, optimizer: OptimizerConfiguration(kind: .sgd, learningRate: 0.05), pool: ComputePool(threadCount: 1))
                _ = try trainer.fit(data.rows(in: share.rowsToLoad), share: share, options: FitOptions(epochs: 2, batchSize: 100), group: member, checkEvery: 5)
                return nil
            } catch let error as DataParallelError {
                return error.message
            } catch {
                return "\(error)"
            }
        }
        // Step 7 went wrong on rank 1; the check after step 10 sees it on both ranks.
        for message in messages {
            let text = try #require(message)
            #expect(text.hasPrefix("the ranks' parameters differ after step 10: rank 0 has hash "), "\(text)")
            #expect(text.contains(", rank 1 has "))
        }
    }
}

import ArgumentParser
import MaaSCompute
import MaaSCore
import MaaSTraining

struct TrainBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "Training throughput: MSE + Adam on random data, timed after one warm-up step.")

    @Option(help: "Layer widths, e.g. 512,2048,2048,512.") var layers: String
    @Option(help: "Training rows.") var rows: Int
    @Option(help: "Epochs to time.") var epochs: Int
    @Option(help: "Rows per step; 0 = full batch.") var batchSize = 0
    @Option(help: "Compute threads (default: all cores).") var threads: Int?

    func run() throws {
        let sizes = layers.split(separator: ",").compactMap { Int($0) }
        var generator = SplitMix64(seed: 1)
        let features = (0..<rows * sizes[0]).map { _ in generator.nextUnitFloat() * 2 - 1 }
        let targets = (0..<rows * sizes.last!).map { _ in generator.nextUnitFloat() * 2 - 1 }
        let data = try TrainingData(features: features, featureWidth: sizes[0], targets: .values(targets, width: sizes.last!))
        let pool = threads.map { ComputePool(threadCount: $0) } ?? .shared
        let trainer = try Trainer(
            model: MLP(layerSizes: sizes, activation: .relu, seed: 1), loss: .mse,
            optimizer: OptimizerConfiguration(kind: .adam, learningRate: 1e-3), pool: pool)
        // One untimed step: buffers are allocated and the pool's threads are awake when timing starts.
        _ = try trainer.fit(data.slice(0..<(batchSize == 0 ? rows : min(batchSize, rows))), options: FitOptions(epochs: 1, batchSize: batchSize))
        let clock = ContinuousClock()
        let start = clock.now
        let result = try trainer.fit(data, options: FitOptions(epochs: epochs, batchSize: batchSize))
        let elapsed = clock.now - start
        let seconds = elapsed.inSeconds
        print("seconds=\(seconds) samples_per_second=\(Double(rows * epochs) / seconds) steps=\(result.losses.count) final_loss=\(result.losses.last!)")
    }
}

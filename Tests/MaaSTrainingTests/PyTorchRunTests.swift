import Foundation
import MaaSCompute
import MaaSCore
import MaaSTestSupport
@testable import MaaSTraining
import Testing

/// Fixtures copied from shared/fixtures/training: three PyTorch runs with every step's loss.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

    static func npy(_ run: String, _ name: String) throws -> Tensor {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(run)/\(name)"))
        return try NPY.decode(Array(data), source: name)
    }

    static func floats(_ run: String, _ name: String) throws -> [Float] {
        try npy(run, name).scalars(as: Float.self)
    }

    /// The run's `nn.Sequential(Linear, ReLU, Linear)` at its initial or final weights.
    /// (`Linear` modules sit at 0, 2, 4, ... with activations between them.)
    static func model(_ run: String, _ stage: String, sizes: [Int], activation: Activation = .relu) throws -> MLP {
        var model = try MLP(layerSizes: sizes, activation: activation, seed: 0)
        for layer in 0..<model.layerCount {
            try model.setLayer(
                layer, weight: floats(run, "\(stage).\(2 * layer).weight.npy"), bias: floats(run, "\(stage).\(2 * layer).bias.npy"))
        }
        return model
    }

    static func data(_ run: String) throws -> TrainingData {
        let x = try npy(run, "X.npy"), y = try npy(run, "Y.npy")
        let targets: TrainingData.Targets =
            y.dataType == .int64
            ? .classes(y.scalars(as: Int64.self).map { Int32($0) }) : .values(y.scalars(as: Float.self), width: y.shape[1])
        return try TrainingData(features: x.scalars(as: Float.self), featureWidth: x.shape[1], targets: targets)
    }
}

/// The worst relative error, with absolute errors below `floor` counted as zero.
func worstRelativeError(_ actual: [Double], _ expected: [Double], floor: Double) -> (index: Int, error: Double) {
    var worst = (index: 0, error: 0.0)
    for i in expected.indices {
        let difference = abs(actual[i] - expected[i])
        let error = difference <= floor ? 0 : difference / abs(expected[i])
        if error > worst.error { worst = (i, error) }
    }
    return worst
}

@Suite("Training matches PyTorch step by step")
struct PyTorchRunTests {
    struct Run: Sendable, CustomTestStringConvertible {
        var name: String
        var sizes: [Int]
        var loss: Loss
        var optimizer: OptimizerConfiguration
        var options: FitOptions
        var testDescription: String { name }
    }

    static let runs: [Run] = {
        var sgd = OptimizerConfiguration(kind: .sgd, learningRate: 0.05)
        sgd.momentum = 0.9
        return [
            Run(name: "seed_adam_mse", sizes: [10, 20, 10], loss: .mse,
                optimizer: OptimizerConfiguration(kind: .adam, learningRate: 1e-3), options: FitOptions(epochs: 1000)),
            Run(name: "seed_sgd_minibatch", sizes: [10, 20, 10], loss: .mse,
                optimizer: sgd, options: FitOptions(epochs: 30, batchSize: 100)),
            Run(name: "cls_adam_xent", sizes: [10, 32, 3], loss: .crossEntropy,
                optimizer: OptimizerConfiguration(kind: .adam, learningRate: 1e-2), options: FitOptions(epochs: 20, batchSize: 64)),
        ]
    }()

    /// Tolerances. Each loss is the mean over the outputs of a chain of products D =
    /// Σ(layer input widths) terms deep, summed by our GEMMs in another order than PyTorch's, so
    /// with the same parameters it is within about 2·γ_D of PyTorch's, normwise (see
    /// `ErrorBound`; γ_D = D·u/(1−D·u), u = 2⁻²⁴): 3.6e-6 for the seed's 10-20-10, 5e-6 for
    /// 10-32-3. The optimizer then carries each step's rounding into the next parameters, and a
    /// wrong formula moves the loss by orders of magnitude more within a few steps. Losses of the
    /// first 300 steps are held to 2·γ_D (measured here: 7e-7 at worst). Final weights are judged
    /// against each layer's largest weight (its scale), within 1e-5 (measured: 2.5e-7).
    ///
    /// seed_adam_mse (1000 full-batch Adam steps fitting noise) turns chaotic after ~450 steps:
    /// a ReLU unit near its kink amplifies rounding, and a one-ulp change of one initial weight
    /// ends 5e-2 apart in a weight (see `seedRecipeIsChaoticLate`). There the later losses are
    /// held to 5e-4, and the final weights to computing the same function: the loss of our final
    /// weights on the data within 5e-4 of the loss of PyTorch's final weights.
    @Test(arguments: runs)
    func reproducesEveryLossAndTheFinalWeights(_ run: Run) throws {
        let model = try Fixtures.model(run.name, "init", sizes: run.sizes)
        let data = try Fixtures.data(run.name)
        try data.check(for: model, loss: run.loss)
        let trainer = try Trainer(model: model, loss: run.loss, optimizer: run.optimizer)
        let result = try trainer.fit(data, options: run.options)

        let expected = try Fixtures.npy(run.name, "losses.npy").scalars(as: Double.self)
        try #require(result.losses.count == expected.count)
        let early = worstRelativeError(Array(result.losses.prefix(300)), Array(expected.prefix(300)), floor: 0)
        let depthBound = 2 * ErrorBound.gamma(run.sizes.dropLast().reduce(0, +))
        #expect(early.error <= depthBound, "step \(early.index): \(result.losses[early.index]) vs PyTorch \(expected[early.index])")
        let all = worstRelativeError(result.losses, expected, floor: 0)
        #expect(all.error <= 5e-4, "step \(all.index): \(result.losses[all.index]) vs PyTorch \(expected[all.index])")

        let final = try Fixtures.model(run.name, "final", sizes: run.sizes)
        if run.name == "seed_adam_mse" {
            let ours = try trainer.evaluate(data).loss
            let theirs = try Trainer(model: final, loss: run.loss, optimizer: run.optimizer).evaluate(data).loss
            #expect(abs(ours - theirs) / theirs <= 5e-4, "final loss \(ours) vs PyTorch's final weights \(theirs)")
            return
        }
        for layer in 0..<final.layerCount {
            for (what, ours, theirs) in [
                ("weight", result.model.weight(layer), final.weight(layer)), ("bias", result.model.bias(layer), final.bias(layer)),
            ] {
                let scale = Double(final.weight(layer).map(abs).max()!)
                let worst = zip(ours, theirs).map { Double(abs($0 - $1)) / scale }.enumerated().max { $0.element < $1.element }!
                #expect(worst.element <= 1e-5, "layer \(layer) \(what)[\(worst.offset)]: \(ours[worst.offset]) vs \(theirs[worst.offset])")
            }
        }
    }

    /// Why seed_adam_mse's final weights are not compared one by one: the same run with its rows
    /// in reverse order (the same full-batch gradient, summed in another order, as PyTorch's
    /// GEMM sums in another order than OpenBLAS) agrees to rounding at step 300 and ends as far
    /// apart as ours is from PyTorch's.
    @Test func seedRecipeIsChaoticLate() throws {
        let run = Self.runs[0]
        let model = try Fixtures.model(run.name, "init", sizes: run.sizes)
        let data = try Fixtures.data(run.name)
        guard case .values(let targets, let width) = data.targets else { return }
        let reversedRows = (0..<data.rows).reversed()
        let reversed = try TrainingData(
            features: reversedRows.flatMap { data.features[$0 * 10..<($0 + 1) * 10] }, featureWidth: 10,
            targets: .values(reversedRows.flatMap { targets[$0 * width..<($0 + 1) * width] }, width: width))
        let results = try [data, reversed].map { rows in
            try Trainer(model: model, loss: run.loss, optimizer: run.optimizer).fit(rows, options: run.options)
        }
        #expect(worstRelativeError(Array(results[0].losses.prefix(300)), Array(results[1].losses.prefix(300)), floor: 0).error <= 1e-6)
        let drift = zip(results[0].model.parameters, results[1].model.parameters).map { abs($0 - $1) }.max()!
        #expect(drift > 1e-3, "the two summation orders ended \(drift) apart")
    }

    /// The guarantee ``Trainer`` documents: on one machine, the same bits on any number of pool
    /// threads (the parts, and so every BLAS call's shape, do not follow the thread count).
    /// Across machines nothing is compared bit for bit: OpenBLAS's kernels differ by CPU.
    @Test(arguments: [1, 2])
    func resultsDoNotDependOnTheThreadCount(_ runIndex: Int) throws {
        let run = Self.runs[runIndex]
        let model = try Fixtures.model(run.name, "init", sizes: run.sizes)
        let data = try Fixtures.data(run.name)
        let results = try [1, 2, 3, 5].map { threads in
            let trainer = try Trainer(model: model, loss: run.loss, optimizer: run.optimizer, pool: ComputePool(threadCount: threads))
            trainer.minimumShardWork = 1
            return try trainer.fit(data, options: run.options)
        }
        for (index, result) in results.enumerated().dropFirst() {
            #expect(result.model == results[0].model, "\(run.name): parameters after training on pool size \([1, 2, 3, 5][index])")
            #expect(result.losses == results[0].losses, "\(run.name): losses on pool size \([1, 2, 3, 5][index])")
        }
    }

    /// Runs made by scripts/peers/make_training_fixtures.py with PyTorch: the activations,
    /// optimizer options and depths the shared runs do not cover. Same tolerances.
    @Test(arguments: ["torch_tanh_nesterov", "torch_sigmoid_adamw", "torch_gelu_adam_l2_xent", "torch_relu_sgd_dampening"])
    func reproducesGeneratedRun(_ name: String) throws {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(Fixtures.directory)/\(name)/run.json")))
        let run = try #require(json as? [String: Any])
        let sizes = try #require(run["layers"] as? [Int])
        let loss = try #require(Loss(rawValue: run["loss"] as! String))
        var optimizer = OptimizerConfiguration(
            kind: try #require(OptimizerConfiguration.Kind(rawValue: run["optimizer"] as! String)), learningRate: run["lr"] as! Double)
        optimizer.momentum = run["momentum"] as? Double ?? 0
        optimizer.dampening = run["dampening"] as? Double ?? 0
        optimizer.nesterov = run["nesterov"] as? Bool ?? false
        optimizer.weightDecay = run["weight_decay"] as? Double ?? 0
        if let betas = run["betas"] as? [Double] { (optimizer.beta1, optimizer.beta2) = (betas[0], betas[1]) }
        optimizer.epsilon = run["eps"] as? Double ?? 1e-8
        let activation = try #require(Activation(rawValue: run["activation"] as! String))

        let data = try Fixtures.data(name)
        let model = try Fixtures.model(name, "init", sizes: sizes, activation: activation)
        try data.check(for: model, loss: loss)
        let result = try Trainer(model: model, loss: loss, optimizer: optimizer)
            .fit(data, options: FitOptions(epochs: run["epochs"] as! Int, batchSize: run["batch"] as! Int))

        let expected = try Fixtures.npy(name, "losses.npy").scalars(as: Double.self)
        try #require(result.losses.count == expected.count)
        let worst = worstRelativeError(result.losses, expected, floor: 0)
        #expect(worst.error <= 2 * ErrorBound.gamma(sizes.dropLast().reduce(0, +)), "step \(worst.index): \(result.losses[worst.index]) vs PyTorch \(expected[worst.index])")
        let final = try Fixtures.model(name, "final", sizes: sizes, activation: activation)
        for layer in 0..<final.layerCount {
            let scale = Double(final.weight(layer).map(abs).max()!)
            for (ours, theirs) in [(result.model.weight(layer), final.weight(layer)), (result.model.bias(layer), final.bias(layer))] {
                let error = zip(ours, theirs).map { Double(abs($0 - $1)) / scale }.max()!
                #expect(error <= 1e-5, "layer \(layer): final parameters \(error) apart")
            }
        }
    }

    @Test func classifierReachesPyTorchsAccuracy() throws {
        let run = Self.runs[2]
        let data = try Fixtures.data(run.name)
        let trainer = try Trainer(model: Fixtures.model(run.name, "init", sizes: run.sizes), loss: .crossEntropy, optimizer: run.optimizer)
        _ = try trainer.fit(data, options: run.options)
        // run.json: final_train_accuracy 0.99791664 = 958 of 960.
        #expect(try trainer.evaluate(data).accuracy == 958.0 / 960.0)
    }
}

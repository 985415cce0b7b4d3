import MaaSCore
@testable import MaaSTraining
import MaaSTestSupport
import Testing

@Suite("Shuffled epochs")
struct ShuffleTests {
    @Test func permutedMovesWholeRows() throws {
        let data = try TrainingData(features: [0, 1, 10, 11, 20, 21], featureWidth: 2, targets: .values([0, 1, 2], width: 1))
        let permuted = data.rows(at: [2, 0, 1])
        #expect(permuted.features == [20, 21, 0, 1, 10, 11])
        #expect(permuted.targets == .values([2, 0, 1], width: 1))
        let labels = try TrainingData(features: [0, 1, 2], featureWidth: 1, targets: .classes([5, 6, 7])).rows(at: [1, 2, 0])
        #expect(labels.targets == .classes([6, 7, 5]) && labels.features == [1, 2, 0])
    }

    /// The same seed gives the same run, another seed another order, and every epoch still
    /// covers every row (a full-batch step sees the same rows whatever their order).
    @Test func shuffleIsSeededAndCoversEveryRow() throws {
        let run = PyTorchRunTests.runs[1]
        let model = try Fixtures.model(run.name, "init", sizes: run.sizes)
        let data = try Fixtures.data(run.name)
        func fit(_ options: FitOptions) throws -> FitResult {
            try Trainer(model: model, loss: run.loss, optimizer: run.optimizer).fit(data, options: options)
        }
        let first = try fit(FitOptions(epochs: 3, batchSize: 100, shuffle: true, seed: 1))
        #expect(try fit(FitOptions(epochs: 3, batchSize: 100, shuffle: true, seed: 1)).losses == first.losses)
        #expect(try fit(FitOptions(epochs: 3, batchSize: 100, shuffle: true, seed: 2)).losses != first.losses)
        #expect(try fit(FitOptions(epochs: 3, batchSize: 100)).losses != first.losses)

        let shuffledFull = try fit(FitOptions(epochs: 1, shuffle: true, seed: 3)).losses[0]
        let inOrder = try fit(FitOptions(epochs: 1)).losses[0]
        // The same rows in another order: each row's outputs may round differently in another GEMM
        // tile (within 2·γ_30 ≈ 3.6e-6 of its scale), and the loss adds their squares in double.
        #expect(abs(shuffledFull - inOrder) / inOrder < 2 * ErrorBound.gamma(30))
    }
}

@Suite("Optimizer settings")
struct OptimizerSettingsTests {
    @Test(arguments: [
        (OptimizerConfiguration(kind: .adam, learningRate: 0), "learning rate must be positive, got 0.0"),
        ({ var c = OptimizerConfiguration(kind: .adam, learningRate: 1e-3); c.beta2 = 1; return c }(), "Adam betas must be in [0, 1), got (0.9, 1.0)"),
        ({ var c = OptimizerConfiguration(kind: .adam, learningRate: 1e-3); c.momentum = 0.9; return c }(), "momentum and Nesterov are SGD options; Adam's are betas and eps"),
        ({ var c = OptimizerConfiguration(kind: .sgd, learningRate: 1e-3); c.nesterov = true; return c }(), "Nesterov momentum requires a momentum and zero dampening"),
        ({ var c = OptimizerConfiguration(kind: .sgd, learningRate: 1e-3); c.weightDecay = -1; return c }(), "weight decay must be 0 or more, got -1.0"),
        ({ var c = OptimizerConfiguration(kind: .sgd, learningRate: 1e-3); c.dampening = 2; return c }(), "dampening must be in [0, 1], got 2.0"),
    ])
    func refusesSettingsPyTorchWouldRefuse(_ configuration: OptimizerConfiguration, _ message: String) throws {
        #expect(throws: TrainingError(message)) {
            try Trainer(model: MLP(layerSizes: [2, 2], activation: .none, seed: 0), loss: .mse, optimizer: configuration)
        }
    }
}

import Foundation
import MaaSCompute
import MaaSCore
@testable import MaaSTraining
import Testing

/// Backpropagation against central finite differences of a separate double-precision forward
/// pass, for every activation and loss: an independent check that does not lean on PyTorch.
@Suite("Gradients against finite differences")
struct GradientTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var activation: Activation
        var loss: Loss
        var testDescription: String { "\(activation) + \(loss)" }
    }

    static let cases = Activation.allCases.flatMap { activation in Loss.allCases.map { Case(activation: activation, loss: $0) } }

    @Test(arguments: cases)
    func backpropagationMatchesFiniteDifferences(_ c: Case) throws {
        var generator = SplitMix64(seed: 42)
        let sizes = [4, 7, 5, 3], rows = 9
        let model = try MLP(layerSizes: sizes, activation: c.activation, seed: 7)
        let features = (0..<rows * sizes[0]).map { _ in generator.nextUnitFloat() * 4 - 2 }
        let targets: TrainingData.Targets =
            c.loss == .mse
            ? .values((0..<rows * 3).map { _ in generator.nextUnitFloat() * 2 - 1 }, width: 3)
            : .classes((0..<rows).map { _ in Int32(generator.next(below: 3)) })
        let data = try TrainingData(features: features, featureWidth: 4, targets: targets)
        // Three pool threads split the 9 rows, so the shard reduction is part of what is checked.
        let trainer = try Trainer(
            model: model, loss: c.loss, optimizer: OptimizerConfiguration(kind: .sgd, learningRate: 1), pool: ComputePool(threadCount: 3))
        trainer.minimumShardWork = 1
        let analytic = features.withUnsafeBufferPointer { x in
            trainer.withTargets(data) { trainer.gradients(features: x.baseAddress!, targets: $0, rows: rows) }
        }
        #expect(abs(analytic.loss - referenceLoss(model.parameters.map(Double.init), model, data)) < 1e-5)

        let step = 1e-4
        var worst = (index: 0, error: 0.0)
        let largest = Double(analytic.gradients.map(abs).max()!)
        for index in model.parameters.indices {
            var parameters = model.parameters.map(Double.init)
            parameters[index] += step
            let up = referenceLoss(parameters, model, data)
            parameters[index] -= 2 * step
            let down = referenceLoss(parameters, model, data)
            let numeric = (up - down) / (2 * step)
            let error = abs(numeric - Double(analytic.gradients[index])) / largest
            if error > worst.error { worst = (index, error) }
        }
        // Judged against the largest gradient (the tensor's scale). Central differences in double
        // err by h²/6·|f'''| ≈ 2e-9·|f'''| plus 1e-16/h of rounding; the float32 gradient is within
        // about 2·γ_D ≈ 1e-6 (D ≈ 16 terms deep) of the exact one. A wrong term is ≫ 1e-3.
        #expect(worst.error <= 1e-4, "parameter \(worst.index): analytic \(analytic.gradients[worst.index]), relative error \(worst.error)")
    }

    /// The loss in double precision, written plainly and independently of the trainer.
    func referenceLoss(_ parameters: [Double], _ model: MLP, _ data: TrainingData) -> Double {
        let sizes = model.layerSizes
        var total = 0.0
        for row in 0..<data.rows {
            var values = (0..<sizes[0]).map { Double(data.features[row * sizes[0] + $0]) }
            for layer in 0..<model.layerCount {
                let w = model.weightOffsets[layer], b = model.biasOffset(layer)
                var next = (0..<sizes[layer + 1]).map { j in
                    parameters[b + j] + (0..<sizes[layer]).reduce(0.0) { $0 + parameters[w + j * sizes[layer] + $1] * values[$1] }
                }
                if layer < model.layerCount - 1 {
                    next = next.map { x in
                        switch model.activation {
                        case .none: x
                        case .relu: max(x, 0)
                        case .tanh: Foundation.tanh(x)
                        case .sigmoid: 1 / (1 + exp(-x))
                        case .gelu: 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
                        }
                    }
                }
                values = next
            }
            switch data.targets {
            case .values(let targets, let width):
                for j in 0..<width { total += pow(values[j] - Double(targets[row * width + j]), 2) / Double(width) }
            case .classes(let labels):
                let largest = values.max()!
                let logTotal = log(values.reduce(0) { $0 + exp($1 - largest) }) + largest
                total += logTotal - values[Int(labels[row])]
            }
        }
        return total / Double(data.rows)
    }
}

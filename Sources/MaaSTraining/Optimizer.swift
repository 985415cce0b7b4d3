import CMaaSKernels
import Glibc

/// An optimizer's hyper-parameters, with PyTorch's meaning and defaults.
public struct OptimizerConfiguration: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case sgd, adam, adamw
    }

    public var kind: Kind
    public var learningRate: Float
    /// SGD only.
    public var momentum: Float = 0
    public var dampening: Float = 0
    public var nesterov = false
    /// L2 penalty added to the gradient (SGD, Adam) or decoupled decay (AdamW).
    public var weightDecay: Float = 0
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8

    public init(kind: Kind, learningRate: Float) {
        self.kind = kind
        self.learningRate = learningRate
    }

    func validate() throws(TrainingError) {
        guard learningRate.isFinite, learningRate > 0 else { throw TrainingError("learning rate must be positive, got \(learningRate)") }
        guard momentum.isFinite, momentum >= 0 else { throw TrainingError("momentum must be 0 or more, got \(momentum)") }
        guard weightDecay.isFinite, weightDecay >= 0 else { throw TrainingError("weight decay must be 0 or more, got \(weightDecay)") }
        guard (0..<1).contains(beta1), (0..<1).contains(beta2) else {
            throw TrainingError("Adam betas must be in [0, 1), got (\(beta1), \(beta2))")
        }
        guard epsilon.isFinite, epsilon >= 0 else { throw TrainingError("eps must be 0 or more, got \(epsilon)") }
        guard !nesterov || (momentum > 0 && dampening == 0) else {
            throw TrainingError("Nesterov momentum requires a momentum and zero dampening")
        }
    }
}

/// An optimizer's state over one flat parameter vector. The update is element-wise, so chunks
/// of it run on different pool threads; each element follows PyTorch's single-tensor
/// `SGD`/`Adam`/`AdamW` formulas in float32, in the same order of operations.
final class OptimizerState {
    let configuration: OptimizerConfiguration
    let count: Int
    /// SGD's momentum buffer, or Adam's first moment.
    let first: UnsafeMutablePointer<Float>
    /// Adam's second moment.
    let second: UnsafeMutablePointer<Float>
    private(set) var step = 0

    init(configuration: OptimizerConfiguration, parameterCount: Int) {
        self.configuration = configuration
        count = parameterCount
        first = .allocate(capacity: max(parameterCount, 1))
        first.initialize(repeating: 0, count: max(parameterCount, 1))
        second = .allocate(capacity: max(parameterCount, 1))
        second.initialize(repeating: 0, count: max(parameterCount, 1))
    }

    deinit {
        first.deallocate()
        second.deallocate()
    }

    /// The per-step scalars, computed once per step (PyTorch computes them in double).
    struct StepScalars {
        var firstStep: Bool
        var stepSize: Float
        var biasCorrection2Root: Float
        var decayFactor: Float
    }

    func beginStep() -> StepScalars {
        step += 1
        let c = configuration
        let correction1 = 1 - pow(Double(c.beta1), Double(step))
        let correction2 = 1 - pow(Double(c.beta2), Double(step))
        return StepScalars(
            firstStep: step == 1,
            stepSize: Float(Double(c.learningRate) / correction1),
            biasCorrection2Root: Float(correction2.squareRoot()),
            decayFactor: 1 - c.learningRate * c.weightDecay)
    }

    /// Updates `parameters[range]` from the sum of the shards' gradients.
    func update(
        _ parameters: UnsafeMutablePointer<Float>, gradients: [UnsafeMutablePointer<Float>], range: Range<Int>,
        scalars s: StepScalars
    ) {
        switch configuration.kind {
        case .sgd:
            // Chunks of a few thousand keep the summed gradient in cache for the update.
            var start = range.lowerBound
            while start < range.upperBound {
                let end = min(start + 4096, range.upperBound)
                let g = gradients[0]
                for shard in gradients.dropFirst() {
                    for i in start..<end { g[i] += shard[i] }
                }
                sgd(parameters, g, start..<end, s)
                start = end
            }
        case .adam, .adamw:
            let c = configuration
            let decoupled = c.kind == .adamw
            var constants = CMaaSKernels_AdamScalars(
                decay: decoupled ? s.decayFactor : 1, l2: decoupled ? 0 : c.weightDecay, one_minus_beta1: 1 - c.beta1,
                beta2: c.beta2, one_minus_beta2: 1 - c.beta2, bias_correction2_root: s.biasCorrection2Root, epsilon: c.epsilon,
                negative_step_size: -s.stepSize)
            let offset = range.lowerBound
            let shifted = gradients.map { Optional($0 + offset) }
            shifted.withUnsafeBufferPointer { pointers in
                CMaaSKernels_adam_update(
                    range.count, parameters + offset, first + offset, second + offset, pointers.baseAddress, Int32(pointers.count),
                    &constants)
            }
        }
    }

    private func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ range: Range<Int>, _ s: StepScalars) {
        let c = configuration
        for i in range {
            var d = g[i]
            if c.weightDecay != 0 { d += c.weightDecay * p[i] }
            if c.momentum != 0 {
                let buffer = s.firstStep ? d : c.momentum * first[i] + (1 - c.dampening) * d
                first[i] = buffer
                d = c.nesterov ? d + c.momentum * buffer : buffer
            }
            p[i] -= c.learningRate * d
        }
    }
}

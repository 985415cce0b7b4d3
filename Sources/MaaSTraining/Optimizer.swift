import CMaaSKernels
import Glibc

/// An optimizer's hyper-parameters, with PyTorch's meaning and defaults.
///
/// Kept in double, as Python holds them: PyTorch derives its per-step constants (1 − β₂,
/// lr / (1 − β₁ᵗ), ...) in double and rounds each to float once, and so do we.
public struct OptimizerConfiguration: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case sgd, adam, adamw
    }

    public var kind: Kind
    public var learningRate: Double
    /// SGD only.
    public var momentum: Double = 0
    public var dampening: Double = 0
    public var nesterov = false
    /// L2 penalty added to the gradient (SGD, Adam) or decoupled decay (AdamW).
    public var weightDecay: Double = 0
    public var beta1: Double = 0.9
    public var beta2: Double = 0.999
    public var epsilon: Double = 1e-8

    public init(kind: Kind, learningRate: Double) {
        self.kind = kind
        self.learningRate = learningRate
    }

    func validate() throws(TrainingError) {
        guard learningRate.isFinite, learningRate > 0 else { throw TrainingError("learning rate must be positive, got \(learningRate)") }
        guard weightDecay.isFinite, weightDecay >= 0 else { throw TrainingError("weight decay must be 0 or more, got \(weightDecay)") }
        switch kind {
        case .sgd:
            guard momentum.isFinite, momentum >= 0 else { throw TrainingError("momentum must be 0 or more, got \(momentum)") }
            guard dampening.isFinite, (0...1).contains(dampening) else { throw TrainingError("dampening must be in [0, 1], got \(dampening)") }
            guard !nesterov || (momentum > 0 && dampening == 0) else {
                throw TrainingError("Nesterov momentum requires a momentum and zero dampening")
            }
        case .adam, .adamw:
            guard (0..<1).contains(beta1), (0..<1).contains(beta2) else {
                throw TrainingError("Adam betas must be in [0, 1), got (\(beta1), \(beta2))")
            }
            guard epsilon.isFinite, epsilon >= 0 else { throw TrainingError("eps must be 0 or more, got \(epsilon)") }
            guard momentum == 0, !nesterov else { throw TrainingError("momentum and Nesterov are SGD options; Adam's are betas and eps") }
        }
    }
}

/// An optimizer's state over one flat parameter vector. The update is element-wise, so chunks
/// of it run on different pool threads; each element follows PyTorch's single-tensor
/// `SGD`/`Adam`/`AdamW` formulas in float32, in the order of its scalar CPU kernels.
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

    /// The per-step constants, derived in double and rounded to float once, as PyTorch does.
    struct StepScalars {
        var firstStep: Bool
        var adam: CMaaSKernels_AdamScalars
    }

    func beginStep() -> StepScalars {
        step += 1
        let c = configuration
        let correction1 = 1 - pow(c.beta1, Double(step))
        let correction2 = 1 - pow(c.beta2, Double(step))
        let decoupled = c.kind == .adamw
        let lerpWeight = Float(1 - c.beta1)
        let adam = CMaaSKernels_AdamScalars(
            decay: decoupled ? Float(1 - c.learningRate * c.weightDecay) : 1, l2: decoupled ? 0 : Float(c.weightDecay),
            lerp_weight: lerpWeight, lerp_complement: 1 - lerpWeight, lerp_from_end: lerpWeight >= 0.5 ? 1 : 0,
            beta2: Float(c.beta2), one_minus_beta2: Float(1 - c.beta2), bias_correction2_root: Float(correction2.squareRoot()),
            epsilon: Float(c.epsilon), negative_step_size: Float(-(c.learningRate / correction1)))
        return StepScalars(firstStep: step == 1, adam: adam)
    }

    /// Updates `parameters[range]` from `gradient[range]`.
    func update(
        _ parameters: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>, range: Range<Int>, scalars s: StepScalars
    ) {
        switch configuration.kind {
        case .sgd:
            sgd(parameters, gradient, range, s)
        case .adam, .adamw:
            var constants = s.adam
            let offset = range.lowerBound
            CMaaSKernels_adam_update(range.count, parameters + offset, first + offset, second + offset, gradient + offset, &constants)
        }
    }

    /// torch.optim.SGD's single-tensor step: d = g + wd·p; buf = d (first step) or
    /// momentum·buf + (1 − dampening)·d; d = d + momentum·buf (Nesterov) or buf; p = p + (−lr)·d.
    private func sgd(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ range: Range<Int>, _ s: StepScalars) {
        let c = configuration
        let weightDecay = Float(c.weightDecay), momentum = Float(c.momentum)
        let keep = Float(1 - c.dampening), negativeRate = Float(-c.learningRate)
        for i in range {
            var d = g[i]
            if weightDecay != 0 { d = d + weightDecay * p[i] }
            if momentum != 0 {
                let buffer = s.firstStep ? d : first[i] * momentum + keep * d
                first[i] = buffer
                d = c.nesterov ? d + momentum * buffer : buffer
            }
            p[i] = p[i] + negativeRate * d
        }
    }
}

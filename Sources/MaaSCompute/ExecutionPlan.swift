import Glibc
import Logging
import MaaSCore
import Synchronization

struct PlanCache {
    var plans: [ExecutionPlan] = []

    mutating func plan(for shapes: [[Int]]) -> ExecutionPlan? {
        guard let index = plans.firstIndex(where: { $0.inputShapes == shapes }) else { return nil }
        let plan = plans.remove(at: index)
        plans.append(plan)  // most recently used last
        return plan
    }

    mutating func insert(_ plan: ExecutionPlan, limit: Int) {
        if plans.contains(where: { $0.inputShapes == plan.inputShapes }) { return }
        if plans.count >= limit { plans.removeFirst() }
        plans.append(plan)
    }
}

/// Buffers and steps for one set of input shapes: shapes inferred, shape-only subgraphs folded,
/// every intermediate allocated once. Runs take turns.
final class ExecutionPlan: Sendable {
    let inputShapes: [[Int]]
    let outputShapes: [[Int]]
    let kernelChoices: [KernelChoice]
    private let state: Mutex<State>

    /// Buffers are only touched by the run that holds the mutex (Mutex needs no Sendable value).
    private struct State {
        var buffers: [Tensor]
        var views: [TensorView?]
        var steps: [(kernel: any Kernel, inputs: [Int?], outputs: [Int])]
        /// Each step's op type, for profiles.
        var opTypes: [String]
        var inputSlots: [Int]
        var outputSlots: [Int]
        var outputConstants: [Tensor?]
    }

    init(model: CompiledModel, inputShapes: [[Int]]) throws(InferenceError) {
        self.inputShapes = inputShapes
        var metas = [ValueMeta?](repeating: nil, count: model.valueCount)
        var views = [TensorView?](repeating: nil, count: model.valueCount)
        var buffers: [Tensor] = []
        // Intermediate values get their buffers once every lifetime is known (after the steps).
        var memory = PlanMemory()
        var pendingMetas: [Int: ValueMeta] = [:]
        // Values folded while the plan is built (shape subgraphs, Expand of a Shape) come out of
        // the same budget as its buffers, each checked before it is allocated.
        var budget = model.maxPlanBytes
        func allocate(_ slot: Int, _ meta: ValueMeta, at step: Int) throws(InferenceError) {
            let bytes = try Shape.elementCount(meta.shape) * (meta.dataType.byteSize ?? 1)
            memory.define(slot, bytes: bytes, at: step)
            pendingMetas[slot] = meta
        }
        for (slot, tensor) in model.constants {
            metas[slot] = ValueMeta(constant: tensor)
            views[slot] = TensorView(base: tensor.unsafeBaseAddress, shape: tensor.shape, dataType: tensor.dataType)
        }
        for (slot, meta) in model.packedConstants { metas[slot] = meta }
        for (index, slot) in model.inputSlots.enumerated() {
            let meta = ValueMeta(model.graph.inputs[index].dataType, inputShapes[index])
            metas[slot] = meta
            try allocate(slot, meta, at: -1)
        }
        var steps: [(kernel: any Kernel, inputs: [Int?], outputs: [Int])] = []
        var opTypes: [String] = []
        var tunable: [(index: Int, step: Int)] = []
        for (stepIndex, step) in model.steps.enumerated() {
            let inputMetas = step.inputs.map { $0.flatMap { metas[$0] } }
            let outputMetas: [ValueMeta]
            do {
                outputMetas = try step.kernel.outputs(inputMetas)
            } catch {
                throw InferenceError(error.code, "\(step.node.label): \(error.message)")
            }
            try CompiledModel.checkOutputCount(step.node, listed: step.outputs.count, produced: outputMetas.count)
            let nonEmpty = step.inputs.compactMap { $0 }
            if nonEmpty.allSatisfy({ metas[$0]?.constant != nil }) {
                // Shape-only subgraphs (Shape → Gather → Concat → Reshape) fold here.
                let values = try CompiledModel.evaluate(
                    step.kernel, node: step.node, inputs: step.inputs.map { $0.flatMap { metas[$0]?.constant } }, pool: model.pool, budget: &budget)
                for (index, slot) in step.outputs.enumerated() {
                    metas[slot] = ValueMeta(constant: values[index])
                    views[slot] = TensorView(base: values[index].unsafeBaseAddress, shape: values[index].shape, dataType: values[index].dataType)
                    buffers.append(values[index])
                }
                continue
            }
            for (index, slot) in step.outputs.enumerated() {
                var meta = outputMetas[index]
                if let constant = meta.constant {
                    // Known regardless of input values (Shape of a non-constant input).
                    metas[slot] = meta
                    views[slot] = TensorView(base: constant.unsafeBaseAddress, shape: constant.shape, dataType: constant.dataType)
                    buffers.append(constant)
                    continue
                }
                meta.constant = nil
                metas[slot] = meta
                if let source = step.kernel.aliases[index], let input = step.inputs[source], memory.alias(slot, of: input) {
                    pendingMetas[slot] = meta
                } else if let source = step.kernel.aliases[index], let input = step.inputs[source], let view = views[input] {
                    views[slot] = TensorView(base: view.base, shape: meta.shape, dataType: meta.dataType)
                } else {
                    try allocate(slot, meta, at: steps.count)
                }
            }
            if outputMetas.allSatisfy({ $0.constant != nil }) { continue }
            if step.kernel is any Tunable { tunable.append((steps.count, stepIndex)) }
            steps.append((step.kernel, step.inputs, step.outputs))
            opTypes.append(getenv("MAAS_PROFILE_NODES") != nil ? step.node.name : step.kernel is AttentionKernel ? "Attention" : step.node.opType)
        }
        for (index, step) in steps.enumerated() {
            for input in step.inputs { if let input { memory.use(input, at: index) } }
        }
        for slot in model.outputSlots { memory.use(slot, at: .max) }
        let (sizes, assignment) = memory.assign()
        let planBytes = sizes.reduce(0, +)
        guard planBytes <= budget else {
            throw InferenceError(.resourceExhausted, "input shapes \(inputShapes) need more than \(model.maxPlanBytes >> 20) MiB of intermediate buffers")
        }
        let shared = try sizes.map { bytes throws(InferenceError) in try Tensor(zeros: .uint8, shape: [bytes]) }
        buffers.append(contentsOf: shared)
        for (slot, meta) in pendingMetas {
            views[slot] = TensorView(base: shared[assignment[slot]!].unsafeBaseAddress, shape: meta.shape, dataType: meta.dataType)
        }
        // With every buffer in place, time the implementations of each GEMM and convolution on
        // this plan's own shapes (on the pool, as runs execute), once per model and shapes.
        var choices: [KernelChoice] = []
        try model.pool.run { () throws(InferenceError) in
            for (index, stepIndex) in tunable {
                let step = steps[index]
                let (kernel, choice) = try model.tuner.choose(
                    step: stepIndex, kernel: step.kernel as! any Tunable, label: model.steps[stepIndex].node.label,
                    shapes: step.inputs.map { $0.flatMap { metas[$0]?.shape } ?? [] },
                    inputs: step.inputs.map { $0.flatMap { views[$0] } }, outputs: step.outputs.map { views[$0]! }, pool: model.pool)
                steps[index].kernel = kernel
                choices.append(choice)
                model.logger?.debug("kernel choice: \(choice)")
            }
        }
        kernelChoices = choices
        var outputShapes: [[Int]] = []
        var outputConstants: [Tensor?] = []
        for slot in model.outputSlots {
            guard let meta = metas[slot] else { throw .invalidModel("graph output has no value") }
            outputShapes.append(meta.shape)
            outputConstants.append(meta.constant)
        }
        self.outputShapes = outputShapes
        state = Mutex(State(
            buffers: buffers, views: views, steps: steps, opTypes: opTypes,
            inputSlots: model.inputSlots, outputSlots: model.outputSlots, outputConstants: outputConstants))
    }

    /// Copies inputs in, runs every step, copies outputs out. Called on a pool thread. With
    /// `profile`, adds each step's seconds to its op type's entry.
    func execute(_ inputs: [Tensor], profile: UnsafeMutablePointer<[String: Double]>? = nil) throws(InferenceError) -> [Tensor] {
        let pool = ComputePool.currentPool ?? ComputePool.shared
        return try state.withLock { state throws(InferenceError) -> [Tensor] in
            for (index, slot) in state.inputSlots.enumerated() {
                let view = state.views[slot]!
                inputs[index].withUnsafeBytes { bytes in
                    if bytes.count > 0 { view.base.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
                }
            }
            if let profile {
                let clock = ContinuousClock()
                for (index, step) in state.steps.enumerated() {
                    let start = clock.now
                    try step.kernel.run(step.inputs.map { $0.flatMap { state.views[$0] } }, step.outputs.map { state.views[$0]! }, pool: pool)
                    profile.pointee[state.opTypes[index], default: 0] += (clock.now - start).inSeconds
                }
            } else {
                for step in state.steps {
                    try step.kernel.run(step.inputs.map { $0.flatMap { state.views[$0] } }, step.outputs.map { state.views[$0]! }, pool: pool)
                }
            }
            var outputs: [Tensor] = []
            for (index, slot) in state.outputSlots.enumerated() {
                if let constant = state.outputConstants[index] {
                    outputs.append(constant)
                    continue
                }
                let view = state.views[slot]!
                var tensor = try Tensor(zeros: view.dataType, shape: view.shape)
                tensor.withUnsafeMutableBytes { bytes in
                    if bytes.count > 0 { bytes.baseAddress!.copyMemory(from: view.base, byteCount: bytes.count) }
                }
                outputs.append(tensor)
            }
            return outputs
        }
    }
}

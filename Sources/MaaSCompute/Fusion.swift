import Glibc
import MaaSCore

/// Compile-time fusions: patterns of the exported graphs run as one step, with no buffer for the
/// values between them. Each applies only where nothing else (no other step, no graph output)
/// reads a value it removes.
extension CompiledModel {
    /// What the compiler fused, as "attention ×6, MatMul+GELU ×6, residual LayerNorm ×13", or
    /// nil when nothing was.
    public var fusionSummary: String? {
        var attention = 0, gelu = 0, residual = 0, pooled = 0
        for step in steps {
            if step.kernel is AttentionKernel { attention += 1 }
            if let product = step.kernel as? any EpilogueFusing, product.gelu != nil { gelu += 1 }
            if let norm = step.kernel as? LayerNormalizationKernel, norm.residual { residual += 1 }
            if let conv = step.kernel as? ConvKernel, conv.pooled { pooled += 1 }
        }
        let parts = [("attention", attention), ("product+GELU", gelu), ("residual LayerNorm", residual), ("Conv+MaxPool", pooled)]
            .filter { $0.1 > 0 }.map { "\($0.0) ×\($0.1)" }
        return parts.isEmpty ? nil : parts.joined(separator: ", ")
    }

    static func fuse(_ steps: [Step], constants: [Int: Tensor], graphOutputs: Set<Int>) -> [Step] {
        var steps = fuseAttention(steps, constants: constants, graphOutputs: graphOutputs)
        steps = fuseBias(steps, constants: constants, graphOutputs: graphOutputs)
        steps = fuseGelu(steps, constants: constants, graphOutputs: graphOutputs)
        steps = fuseResidualLayerNorm(steps, graphOutputs: graphOutputs)
        steps = fuseRelu(steps, graphOutputs: graphOutputs)
        return fuseMaxPool(steps, graphOutputs: graphOutputs)
    }

    static func readers(_ steps: [Step]) -> [Int: [Int]] {
        var readers: [Int: [Int]] = [:]
        for (index, step) in steps.enumerated() {
            for input in Set(step.inputs.compactMap({ $0 })) { readers[input, default: []].append(index) }
        }
        return readers
    }

    private static func isDefaultDomain(_ node: Node) -> Bool { node.domain.isEmpty || node.domain == "ai.onnx" }

    /// MatMul by a constant matrix, then Add of a constant [N] row (every Linear layer as both
    /// exporters write it): the row becomes the product's bias, added in its output pass.
    static func fuseBias(_ steps: [Step], constants: [Int: Tensor], graphOutputs: Set<Int>) -> [Step] {
        let readers = readers(steps)
        var result: [Step?] = steps.map { $0 }
        for (index, step) in steps.enumerated() {
            guard var kernel = step.kernel as? MatMulKernel, let packed = kernel.packed, kernel.bias == nil,
                let product = step.outputs.first, !graphOutputs.contains(product),
                let consumers = readers[product], consumers.count == 1
            else { continue }
            let add = steps[consumers[0]]
            guard add.node.opType == "Add", isDefaultDomain(add.node), add.inputs.count == 2,
                let other = add.inputs.first(where: { $0 != product }) ?? nil,
                let row = constants[other], row.dataType == .float32, row.rank == 1, row.shape[0] == packed.n
            else { continue }
            let values = row.scalars(as: Float.self)
            let padded = (values.count + 15) / 16 * 16
            guard let bias = try? Tensor(values + [Float](repeating: 0, count: padded - values.count), shape: [padded]) else { continue }
            kernel.bias = bias
            result[index] = Step(node: step.node, kernel: kernel, inputs: step.inputs, outputs: add.outputs)
            result[consumers[0]] = nil
        }
        return result.compactMap { $0 }
    }

    /// Scaled dot-product attention as both exporters write it: MatMul(Mul(Q, c₁), Mul(Kᵀ, c₂)),
    /// or eager attention's MatMul(Q, Kᵀ) then Div or Mul by a scalar; an optional Add of the mask, Softmax over the last axis, an optional Where(IsNaN(P), 0, P),
    /// and MatMul(P, V). One ``AttentionKernel`` step replaces them, the scalar Muls folded into
    /// its scale; the scores and probabilities never reach a buffer.
    static func fuseAttention(_ steps: [Step], constants: [Int: Tensor], graphOutputs: Set<Int>) -> [Step] {
        let readers = readers(steps)
        var producer: [Int: Int] = [:]
        for (index, step) in steps.enumerated() { for output in step.outputs { producer[output] = index } }
        func onlyReader(_ slot: Int) -> Int? {
            guard !graphOutputs.contains(slot), let list = readers[slot], list.count == 1 else { return nil }
            return list[0]
        }
        func isPlainProduct(_ step: Step) -> Bool {
            guard let kernel = step.kernel as? MatMulKernel else { return false }
            return kernel.bias == nil && kernel.gelu == nil && !kernel.relu
        }
        func scalar(_ slot: Int?) -> Float? {
            guard let slot, let tensor = constants[slot], tensor.elementCount == 1, tensor.dataType == .float32 else { return nil }
            return tensor.scalars(as: Float.self)[0]
        }
        var result: [Step?] = steps.map { $0 }
        for (first, step) in steps.enumerated() where result[first] != nil && isPlainProduct(step) && step.kernel is MatMulKernel {
            guard (step.kernel as! MatMulKernel).packed == nil, let scores = step.outputs.first, var next = onlyReader(scores) else { continue }
            var members = [first]
            var mask: Int?
            var current = scores
            var scale: Float = 1
            // Eager attention scales the scores after the product: Div(S, sqrt d) or Mul(S, c).
            if ["Mul", "Div"].contains(steps[next].node.opType), isDefaultDomain(steps[next].node), steps[next].inputs.count == 2,
                steps[next].inputs[0] == current, let c = scalar(steps[next].inputs[1]), c != 0,
                let after = onlyReader(steps[next].outputs[0])
            {
                scale = steps[next].node.opType == "Mul" ? c : 1 / c
                members.append(next)
                current = steps[next].outputs[0]
                next = after
            }
            if steps[next].node.opType == "Add", isDefaultDomain(steps[next].node), steps[next].inputs.count == 2 {
                guard let other = steps[next].inputs.first(where: { $0 != current }) ?? nil, let after = onlyReader(steps[next].outputs[0]) else { continue }
                mask = other
                members.append(next)
                current = steps[next].outputs[0]
                next = after
            }
            guard let softmax = steps[next].kernel as? SoftmaxKernel, !softmax.log, !softmax.legacy, softmax.axis == -1 else { continue }
            members.append(next)
            let probabilities = steps[next].outputs[0]
            guard !graphOutputs.contains(probabilities), let consumers = readers[probabilities] else { continue }
            var nanToZero = false
            var weights = probabilities
            if consumers.count == 2 {
                // Where(IsNaN(P), 0, P): the exporters' guard for rows with every key masked.
                let isNaN = consumers.first { steps[$0].node.opType == "IsNaN" }
                let select = consumers.first { steps[$0].node.opType == "Where" }
                guard let isNaN, let select, let flags = onlyReader(steps[isNaN].outputs[0]), flags == select,
                    steps[select].inputs.count == 3, steps[select].inputs[0] == steps[isNaN].outputs[0],
                    scalar(steps[select].inputs[1]) == 0, steps[select].inputs[2] == probabilities
                else { continue }
                members += [isNaN, select]
                nanToZero = true
                weights = steps[select].outputs[0]
            } else if consumers.count != 1 {
                continue
            }
            guard let last = onlyReader(weights), isPlainProduct(steps[last]), steps[last].inputs.first == weights,
                steps[last].inputs.count == 2, let values = steps[last].inputs[1]
            else { continue }
            // Fold the scalar Muls on Q and Kᵀ (sdpa's sqrt-scale on each side) into the kernel.
            var operands = [step.inputs[0], step.inputs[1]]
            for side in 0..<2 {
                guard let slot = operands[side], let mul = producer[slot], result[mul] != nil, onlyReader(slot) == first,
                    steps[mul].node.opType == "Mul", isDefaultDomain(steps[mul].node), steps[mul].inputs.count == 2
                else { continue }
                let ins = steps[mul].inputs
                if let c = scalar(ins[1]), let x = ins[0] {
                    scale *= c
                    operands[side] = x
                    members.append(mul)
                } else if let c = scalar(ins[0]), let x = ins[1] {
                    scale *= c
                    operands[side] = x
                    members.append(mul)
                }
            }
            var kernel = AttentionKernel(scale: scale, hasMask: mask != nil, nanToZero: nanToZero)
            // Fold the Transposes that take the heads out of [batch, seq, heads, depth] (and put
            // them back): the kernel reads and writes those layouts in place. Q and V must keep
            // their last axis last (rows read contiguously); K may come in either layout.
            operands.append(values)
            for side in 0..<3 {
                guard let slot = operands[side], let producerIndex = producer[slot], result[producerIndex] != nil,
                    let transpose = steps[producerIndex].kernel as? TransposeKernel, let perm = transpose.perm,
                    side == 1 || perm.last == perm.count - 1, !graphOutputs.contains(slot)
                else { continue }
                let others = (readers[slot] ?? []).filter { !members.contains($0) && $0 != last }
                // The TorchScript exporter also takes Shape of the transposed Q and V: those only
                // need the shape, which a stand-in that moves no data still gives them.
                guard others.allSatisfy({ steps[$0].kernel is ShapeKernel }) else { continue }
                kernel.permutations[side] = perm
                operands[side] = steps[producerIndex].inputs[0]
                if others.isEmpty {
                    members.append(producerIndex)
                } else {
                    let original = steps[producerIndex]
                    result[producerIndex] = Step(node: original.node, kernel: ShapeOnlyKernel(transpose), inputs: original.inputs, outputs: original.outputs)
                }
            }
            var outputs = steps[last].outputs
            if let out = outputs.first, let after = onlyReader(out), let transpose = steps[after].kernel as? TransposeKernel,
                let perm = transpose.perm, perm.last == perm.count - 1
            {
                kernel.outputPermutation = perm
                outputs = steps[after].outputs
                result[after] = nil
            }
            let inputs: [Int?] = [operands[0], operands[1]] + (mask.map { [Optional($0)] } ?? []) + [operands[2]]
            for member in members { result[member] = nil }
            result[last] = Step(node: steps[last].node, kernel: kernel, inputs: inputs, outputs: outputs)
        }
        return result.compactMap { $0 }
    }

    /// LayerNormalization of an Add (the transformer block's residual connection): one pass
    /// forms the sum and its mean, without writing the sum to a buffer of its own.
    static func fuseResidualLayerNorm(_ steps: [Step], graphOutputs: Set<Int>) -> [Step] {
        let readers = readers(steps)
        var result: [Step?] = steps.map { $0 }
        for (index, step) in steps.enumerated() {
            guard step.node.opType == "Add", isDefaultDomain(step.node), step.inputs.count == 2,
                let a = step.inputs[0], let b = step.inputs[1], let sum = step.outputs.first, !graphOutputs.contains(sum),
                let consumers = readers[sum], consumers.count == 1,
                var norm = steps[consumers[0]].kernel as? LayerNormalizationKernel, !norm.residual,
                steps[consumers[0]].inputs.first == sum, !steps[consumers[0]].inputs.dropFirst().contains(sum)
            else { continue }
            let layer = steps[consumers[0]]
            norm.residual = true
            let inputs: [Int?] = [a, layer.inputs[1], layer.inputs.count > 2 ? layer.inputs[2] : nil, b]
            result[consumers[0]] = Step(node: layer.node, kernel: norm, inputs: inputs, outputs: layer.outputs)
            result[index] = nil
        }
        return result.compactMap { $0 }
    }

    /// The elementwise ops a GELU is exported as (with scalar constants).
    static let geluOps: Set<String> = ["Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Sqrt", "Gelu"]

    /// A product followed by GELU, written as ONNX's Gelu (opset 20), as the TorchScript
    /// exporter's Div/Erf/Add/Mul/Mul or as GPT-2's tanh form with Pow: the GELU runs on the
    /// product's output while it is in cache. The subgraph is recognised by what it computes,
    /// not by its op order: every op elementwise with scalar constants, evaluated on probe
    /// values and compared with both GELU forms.
    static func fuseGelu(_ steps: [Step], constants: [Int: Tensor], graphOutputs: Set<Int>) -> [Step] {
        let readers = readers(steps)
        var result: [Step?] = steps.map { $0 }
        var index = 0
        while index < steps.count {
            defer { index += 1 }
            guard result[index] != nil, var kernel = steps[index].kernel as? any EpilogueFusing, kernel.gelu == nil,
                !(kernel is any ReluFusing && (kernel as! any ReluFusing).relu),
                let x = steps[index].outputs.first, !graphOutputs.contains(x)
            else { continue }
            // GPT-2's Conv1D exports as Gemm on 2-D rows and a Reshape back: GELU commutes with it.
            var start = x, reshape: Int?
            if let consumers = readers[x], consumers.count == 1, ["Reshape", "Flatten", "Squeeze", "Unsqueeze"].contains(steps[consumers[0]].node.opType),
                steps[consumers[0]].inputs.first == x, let reshaped = steps[consumers[0]].outputs.first, !graphOutputs.contains(reshaped)
            {
                (start, reshape) = (reshaped, consumers[0])
            }
            guard let (members, output, form) = geluRegion(from: start, after: reshape ?? index, steps, readers: readers, constants: constants, graphOutputs: graphOutputs)
            else { continue }
            kernel.gelu = form
            for member in members { result[member] = nil }
            if let reshape {
                result[index] = Step(node: steps[index].node, kernel: kernel, inputs: steps[index].inputs, outputs: steps[index].outputs)
                let step = steps[reshape]
                result[reshape] = Step(node: step.node, kernel: step.kernel, inputs: step.inputs, outputs: [output])
            } else {
                result[index] = Step(node: steps[index].node, kernel: kernel, inputs: steps[index].inputs, outputs: [output])
            }
        }
        return result.compactMap { $0 }
    }

    private static func geluRegion(
        from x: Int, after start: Int, _ steps: [Step], readers: [Int: [Int]], constants: [Int: Tensor], graphOutputs: Set<Int>
    ) -> (members: [Int], output: Int, form: GeluForm)? {
        func isScalarConstant(_ slot: Int) -> Bool { constants[slot].map { $0.elementCount == 1 && $0.dataType == .float32 } ?? false }
        var members: [Int] = []
        var produced: Set<Int> = [x]
        for index in (start + 1)..<min(steps.count, start + 64) {
            let step = steps[index]
            let inputs = step.inputs.compactMap { $0 }
            guard inputs.contains(where: produced.contains) else { continue }
            guard geluOps.contains(step.node.opType), isDefaultDomain(step.node), step.outputs.count == 1,
                inputs.allSatisfy({ produced.contains($0) || isScalarConstant($0) }), members.count < 12
            else { return nil }
            members.append(index)
            let output = step.outputs[0]
            produced.insert(output)
            // A candidate when everything before `output` is read only inside the region.
            let inner = produced.subtracting([output])
            let closed = inner.allSatisfy { slot in
                !graphOutputs.contains(slot) && (readers[slot] ?? []).allSatisfy { members.contains($0) }
            }
            let transcendental = members.contains { ["Erf", "Tanh", "Gelu"].contains(steps[$0].node.opType) }
            if closed, transcendental, let form = probeGelu(members.map { steps[$0] }, x: x, output: output, constants: constants) {
                return (members, output, form)
            }
        }
        return nil
    }

    /// Runs the region's kernels on probe values of x and names the GELU form they compute.
    private static func probeGelu(_ region: [Step], x: Int, output: Int, constants: [Int: Tensor]) -> GeluForm? {
        let probes = (0...96).map { Float($0 - 48) / 8 } + [-20, -9.5, 0.001, -0.003, 11, 30]
        guard let probe = try? Tensor(probes, shape: [probes.count]) else { return nil }
        var values: [Int: Tensor] = [x: probe]
        let pool = ComputePool.shared
        // Each step's output is one probe-sized tensor; a constant that broadcasts it larger fails.
        var budget = region.count * probes.count * MemoryLayout<Float>.size
        for step in region {
            let inputs = step.inputs.map { slot in slot.flatMap { values[$0] ?? constants[$0] } }
            guard let computed = try? evaluate(step.kernel, node: step.node, inputs: inputs, pool: pool, budget: &budget), computed.count == 1,
                computed[0].shape == [probes.count], computed[0].dataType == .float32
            else { return nil }
            values[step.outputs[0]] = computed[0]
        }
        guard let got = values[output]?.scalars(as: Float.self) else { return nil }
        func matches(_ reference: (Double) -> Double) -> Bool {
            // Op-by-op float32 evaluation is a few ulps from exact; the two forms differ by up to 5e-4.
            zip(probes, got).allSatisfy { x, y in abs(Double(y) - reference(Double(x))) <= 1e-6 * (1 + abs(Double(x))) }
        }
        if matches({ 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) }) { return .erf }
        if matches({ 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) }) { return .tanh }
        return nil
    }

    /// Folds each 2x2 stride-2 MaxPool into the (Relu-fused) Conv before it when nothing else
    /// reads the convolution's output: the direct kernel pools in registers, so the unpooled
    /// tensor is never written (on the MNIST CNN: scripts/bench-engine).
    static func fuseMaxPool(_ steps: [Step], graphOutputs: Set<Int>) -> [Step] {
        let readers = readerCounts(steps)
        var result: [Step] = []
        for step in steps {
            if step.node.opType == "MaxPool", step.node.outputs.count == 1, let input = step.inputs.first ?? nil,
                readers[input] == 1, !graphOutputs.contains(input),
                let index = result.lastIndex(where: { $0.outputs.first == input }), result[index].outputs.count == 1,
                let conv = result[index].kernel as? ConvKernel, let fused = conv.fusingMaxPool(step.kernel)
            {
                let producer = result[index]
                result[index] = Step(node: producer.node, kernel: fused, inputs: producer.inputs, outputs: step.outputs)
                continue
            }
            result.append(step)
        }
        return result
    }

    private static func readerCounts(_ steps: [Step]) -> [Int: Int] {
        var readers: [Int: Int] = [:]
        for step in steps {
            for input in step.inputs.compactMap({ $0 }) { readers[input, default: 0] += 1 }
        }
        return readers
    }

    /// Folds each Relu into the Gemm, MatMul or Conv before it when nothing else reads the
    /// product: one pass over the output instead of two.
    static func fuseRelu(_ steps: [Step], graphOutputs: Set<Int>) -> [Step] {
        let readers = readerCounts(steps)
        var result: [Step] = []
        for step in steps {
            if step.node.opType == "Relu", step.node.domain.isEmpty || step.node.domain == "ai.onnx",
                let input = step.inputs.first ?? nil, readers[input] == 1, !graphOutputs.contains(input),
                let index = result.lastIndex(where: { $0.outputs.first == input }), result[index].outputs.count == 1,
                let fused = result[index].kernel.fusingRelu()
            {
                let producer = result[index]
                result[index] = Step(node: producer.node, kernel: fused, inputs: producer.inputs, outputs: step.outputs)
                continue
            }
            result.append(step)
        }
        return result
    }

}

/// A Transpose whose data nobody reads any more (the attention kernel reads its input in
/// place), kept for the Shape ops that read its shape: it gives the same type and shape and
/// moves nothing (its "buffer" is the input's, never read under this shape).
struct ShapeOnlyKernel: Kernel {
    let transpose: TransposeKernel

    init(_ transpose: TransposeKernel) {
        self.transpose = transpose
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        try transpose.outputs(inputs)
    }

    var aliases: [Int: Int] { [0: 0] }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}
}

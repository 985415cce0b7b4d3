import CMaaSKernels
import Glibc
import MaaSCore

/// Softmax and LogSoftmax. Before opset 13 the input is coerced to 2-D at `axis` (default 1)
/// and normalized over everything after it; from 13 on, over the one `axis` (default -1).
struct SoftmaxKernel: Kernel {
    let axis: Int
    let log: Bool
    let legacy: Bool

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        legacy = context.opset < 13
        axis = try context.int("axis", legacy ? 1 : -1)
        log = context.node.opType == "LogSoftmax"
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0], data.dataType == .float32 else { throw .unsupported("expects a float32 input") }
        _ = try normalizeAxis(axis, rank: data.shape.count, "Softmax")
        return [ValueMeta(.float32, data.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!.floats, y = outputs[0].floats
        let shape = outputs[0].shape
        let axis = try normalizeAxis(self.axis, rank: shape.count, "Softmax")
        // (outer, length, inner): normalize over `length` elements spaced `inner` apart.
        let outer = shape[..<axis].reduce(1, *)
        let length = legacy ? shape[axis...].reduce(1, *) : shape[axis]
        let inner = legacy ? 1 : shape[(axis + 1)...].reduce(1, *)
        let log = self.log
        forEachChunk(outer * inner, pool: pool, grain: max(1, 4096 / max(length, 1))) { range in
            for lane in range {
                let base = (lane / inner) * length * inner + lane % inner
                var maximum = -Float.infinity
                for j in 0..<length { maximum = max(maximum, x[base + j * inner]) }
                var sum: Float = 0
                for j in 0..<length {
                    let e = expf(x[base + j * inner] - maximum)
                    y[base + j * inner] = e
                    sum += e
                }
                if log {
                    let logSum = logf(sum)
                    for j in 0..<length { y[base + j * inner] = x[base + j * inner] - maximum - logSum }
                } else {
                    let scale = 1 / sum
                    for j in 0..<length { y[base + j * inner] *= scale }
                }
            }
        }
    }
}

/// BatchNormalization at inference: per channel (axis 1), y = x · a + b with a and b folded
/// from scale, bias, mean and variance at load.
struct BatchNormalizationKernel: Kernel {
    let epsilon: Float
    let folded: (scale: [Float], shift: [Float])?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(5...5)
        epsilon = try context.float("epsilon", 1e-5)
        if try context.int("training_mode", 0) != 0 {
            throw context.error("training_mode=1 is not supported (inference only)")
        }
        if context.node.outputs.count > 1 {
            throw context.error("running mean/variance outputs (training) are not supported")
        }
        if let scale = context.constants[1], let bias = context.constants[2], let mean = context.constants[3], let variance = context.constants[4],
            [scale, bias, mean, variance].allSatisfy({ $0.dataType == .float32 && $0.rank == 1 && $0.shape == scale.shape })
        {
            let s = scale.scalars(as: Float.self), b = bias.scalars(as: Float.self)
            let m = mean.scalars(as: Float.self), v = variance.scalars(as: Float.self)
            let eps = epsilon
            let a = (0..<s.count).map { s[$0] / sqrtf(v[$0] + eps) }
            folded = (a, (0..<s.count).map { b[$0] - m[$0] * a[$0] })
        } else {
            folded = nil
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0], x.dataType == .float32, x.shape.count >= 2 else {
            throw .unsupported("expects a float32 input of rank >= 2")
        }
        for index in 1...4 {
            guard let meta = inputs[index], meta.shape == [x.shape[1]] else {
                throw .invalidInput("input \(index) must have shape [\(x.shape[1])], got \(inputs[index]?.shape ?? [])")
            }
        }
        return [ValueMeta(.float32, x.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let x = inputs[0]!, y = outputs[0]
        let channels = x.shape[1]
        var scale: [Float], shift: [Float]
        if let folded {
            (scale, shift) = folded
        } else {
            let s = inputs[1]!.floats, b = inputs[2]!.floats, m = inputs[3]!.floats, v = inputs[4]!.floats
            scale = (0..<channels).map { s[$0] / sqrtf(v[$0] + epsilon) }
            shift = (0..<channels).map { b[$0] - m[$0] * scale[$0] }
        }
        let spatial = x.shape[2...].reduce(1, *)
        let px = x.floats, py = y.floats
        let batch = x.shape[0]
        for n in 0..<batch {
            for c in 0..<channels {
                let base = (n * channels + c) * spatial
                let (a, b) = (scale[c], shift[c])
                for i in 0..<spatial { py[base + i] = px[base + i] * a + b }
            }
        }
    }
}

/// LayerNormalization over the dims from `axis` on, with optional scale and bias.
struct LayerNormalizationKernel: Kernel {
    let axis: Int
    let epsilon: Float
    /// LayerNorm(a + b) with the residual Add folded in (set by the graph compiler): input 3 is b,
    /// shaped like a.
    var residual = false

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...3)
        axis = try context.int("axis", -1)
        epsilon = try context.float("epsilon", 1e-5)
        if context.node.outputs.count > 1, context.node.outputs.dropFirst().contains(where: { !$0.isEmpty }) {
            throw context.error("Mean and InvStdDev outputs are not supported")
        }
        if try context.int("stash_type", 1) != 1 {
            throw context.error("stash_type other than float32 is not supported")
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard var x = inputs[0], x.dataType == .float32 else { throw .unsupported("expects a float32 input") }
        if residual {
            guard let b = inputs[3], b.dataType == .float32 else { throw .unsupported("expects float32 inputs to the residual Add") }
            guard let shape = Shape.broadcast(x.shape, b.shape) else {
                throw .invalidInput("residual Add: shapes \(x.shape) and \(b.shape) do not broadcast")
            }
            x.shape = shape
        }
        let axis = try normalizeAxis(self.axis, rank: x.shape.count, "LayerNormalization")
        let normalized = Array(x.shape[axis...])
        let size = normalized.reduce(1, *)
        for index in 1..<min(inputs.count, 3) {
            guard let meta = inputs[index] else { continue }
            // Scale and bias cover the normalized dims exactly (as exporters write them) or are scalars.
            guard Shape.broadcast(normalized, meta.shape) == normalized, meta.count == size || meta.count == 1 else {
                throw .unsupported("input \(index) of shape \(meta.shape) for normalized dims \(normalized): only full or scalar scale/bias are supported")
            }
        }
        return [ValueMeta(.float32, x.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        var x = inputs[0]!, y = outputs[0]
        var addend = residual ? inputs[3]!.floats : nil
        if residual, inputs[3]!.shape != x.shape {
            // A broadcasting residual: the sum first, then LayerNorm in place.
            broadcastApply(x, inputs[3]!, y, pool: pool) { (a: Float, b: Float) -> Float in a + b }
            (x, addend) = (y, nil)
        }
        let axis = try normalizeAxis(self.axis, rank: y.shape.count, "LayerNormalization")
        let size = y.shape[axis...].reduce(1, *)
        let rows = y.count / max(size, 1)
        // Scale and bias are read in place; a one-element tensor broadcasts (stride 0).
        let scale = inputs[1].map { (pointer: $0.floats, stride: $0.count == 1 ? 0 : 1) }
        let bias = inputs.count > 2 ? inputs[2].map { (pointer: $0.floats, stride: $0.count == 1 ? 0 : 1) } : nil
        let px = x.floats, py = y.floats, epsilon = self.epsilon
        let grain = max(1, 8192 / max(size, 1))
        if size == 1 || ((scale?.stride ?? 1) == 1 && (bias?.stride ?? 1) == 1) {
            let (scalePointer, biasPointer) = (scale.map { UnsafePointer($0.pointer) }, bias.map { UnsafePointer($0.pointer) })
            forEachChunk(rows, pool: pool, grain: grain) { range in
                let offset = range.lowerBound * size
                CMaaSKernels_layer_norm(px + offset, addend.map { UnsafePointer($0 + offset) }, scalePointer, biasPointer, py + offset, range.count, size, epsilon)
            }
            return
        }
        if let addend {
            forEachChunk(y.count, pool: pool) { range in for i in range { py[i] = px[i] + addend[i] } }
        }
        let source = addend == nil ? px : py
        forEachChunk(rows, pool: pool, grain: grain) { range in
            for row in range {
                let input = source + row * size, output = py + row * size
                var mean: Float = 0
                for i in 0..<size { mean += input[i] }
                mean /= Float(size)
                var variance: Float = 0
                for i in 0..<size {
                    let d = input[i] - mean
                    variance += d * d
                }
                let inverse = 1 / sqrtf(variance / Float(size) + epsilon)
                for i in 0..<size {
                    var value = (input[i] - mean) * inverse
                    if let scale { value *= scale.pointer[i * scale.stride] }
                    if let bias { value += bias.pointer[i * bias.stride] }
                    output[i] = value
                }
            }
        }
    }
}

struct ArgMaxKernel: Kernel {
    let axis: Int
    let keepDims: Bool
    let selectLast: Bool

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        axis = try context.int("axis", 0)
        keepDims = try context.int("keepdims", 1) != 0
        selectLast = try context.int("select_last_index", 0) != 0
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0], x.dataType == .float32 else { throw .unsupported("expects a float32 input") }
        let axis = try normalizeAxis(self.axis, rank: x.shape.count, "ArgMax")
        guard x.shape[axis] > 0 else { throw .invalidInput("ArgMax over an empty axis") }
        var shape = x.shape
        if keepDims { shape[axis] = 1 } else { shape.remove(at: axis) }
        return [ValueMeta(.int64, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!, y = outputs[0].pointer(Int64.self)
        let axis = try normalizeAxis(self.axis, rank: x.shape.count, "ArgMax")
        let outer = x.shape[..<axis].reduce(1, *), length = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
        let px = x.floats
        for o in 0..<outer {
            for i in 0..<inner {
                var best = 0
                var bestValue = px[o * length * inner + i]
                for j in 1..<max(length, 1) {
                    let value = px[(o * length + j) * inner + i]
                    if value > bestValue || (selectLast && value == bestValue) {
                        best = j
                        bestValue = value
                    }
                }
                y[o * inner + i] = Int64(best)
            }
        }
    }
}

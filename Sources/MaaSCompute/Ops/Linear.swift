import CMaaSKernels
import MaaSCore

/// Gemm: Y = alpha · A' · B' + beta · C.
struct GemmKernel: ReluFusing, EpilogueFusing {
    let alpha: Float
    let beta: Float
    let transA: Bool
    let transB: Bool
    let packed: PackedMatrix?
    /// beta · C as one row, when C is a constant [N] or [1, N] (zero-padded to whole panels).
    let biasRow: Tensor?
    /// A following Relu computed in the same pass (set by the graph compiler).
    var relu = false
    /// A following GELU computed on the output while it is hot (set by the graph compiler).
    var gelu: GeluForm?
    /// Set per plan by timing (``Tunable``) when OpenBLAS runs it; nil lets it split by shape.
    var implementation: GEMMImplementation?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...3)
        alpha = try context.float("alpha", 1)
        beta = try context.float("beta", 1)
        transA = try context.int("transA", 0) != 0
        transB = try context.int("transB", 0) != 0
        let weight = context.constants[1]
        if let c = context.constants.count > 2 ? context.constants[2] : nil, let weight, weight.rank == 2,
            c.dataType == .float32, c.rank == 1 || (c.rank == 2 && c.shape[0] == 1), c.shape.last == weight.shape[transB ? 0 : 1]
        {
            let beta = self.beta
            let values = c.scalars(as: Float.self).map { $0 * beta }
            let padded = (values.count + 15) / 16 * 16
            biasRow = try Tensor(values + [Float](repeating: 0, count: padded - values.count), shape: [padded])
        } else {
            biasRow = nil
        }
        // The panel kernels compute A . B + a bias row, nothing more general.
        let hasC = context.node.inputs.count > 2 && !context.node.inputs[2].isEmpty
        let panelsApply = !transA && alpha == 1 && (biasRow != nil || !hasC || beta == 0)
        if let weight {
            do {
                packed = try PackedMatrix(weight, transposed: transB, panelsApply: panelsApply)
            } catch {
                throw context.error(error.message)
            }
        } else {
            packed = nil
        }
    }

    var packedInputs: Set<Int> { packed == nil ? [] : [1] }
    /// Only a constant weight packed into panels is multiplied by our own kernels.
    var callsOpenBLAS: Bool { packed?.panelPointer == nil }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let a = inputs[0], let b = inputs[1] else { throw .invalidModel("missing input") }
        guard a.dataType == .float32, b.dataType == .float32 else {
            throw .unsupported("Gemm on \(a.dataType) is not supported (float32 only)")
        }
        guard a.shape.count == 2, b.shape.count == 2 else {
            throw .invalidInput("Gemm needs 2-D inputs, got \(a.shape) and \(b.shape)")
        }
        let (m, k) = transA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
        let (kb, n) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
        guard k == kb else {
            throw .invalidInput("input A \(a.shape) and B \(b.shape) have inner dimensions \(k) and \(kb)")
        }
        if inputs.count > 2, let c = inputs[2] {
            guard c.dataType == .float32, let shape = Shape.broadcast([m, n], c.shape), shape == [m, n] else {
                throw .invalidInput("C \(c.shape) does not broadcast to [\(m), \(n)]")
            }
        }
        return [ValueMeta(.float32, [m, n])]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        product(inputs, outputs, pool: pool)
        if let gelu { applyGelu(gelu, outputs[0], pool: pool) }
    }

    private func product(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let a = inputs[0]!, y = outputs[0]
        let (m, n) = (y.shape[0], y.shape[1])
        let k = transA ? a.shape[0] : a.shape[1]
        let bias = biasRow.map { UnsafePointer($0.unsafeBaseAddress.assumingMemoryBound(to: Float.self)) }
        if let panels = packed?.panelPointer {
            SmallGEMM.run(m: m, n: n, k: k, a: a.floats, lda: a.shape[1], panels: panels, bias: bias, c: y.floats, relu: relu, pool: pool)
            return
        }
        var gemm: TiledGEMM
        if let b = packed?.rowMajorPointer {
            gemm = TiledGEMM(m: m, n: n, k: k, a: a.floats, lda: a.shape[1], b: b, ldb: n, c: y.floats)
        } else {
            let b = inputs[1]!
            gemm = TiledGEMM(m: m, n: n, k: k, a: a.floats, lda: a.shape[1], b: b.floats, ldb: b.shape[1], transposeB: transB, c: y.floats)
        }
        gemm.alpha = alpha
        gemm.transposeA = transA
        gemm.split = implementation?.split ?? .auto
        let generalC = inputs.count > 2 && inputs[2] != nil && biasRow == nil && beta != 0
        gemm.relu = relu && !generalC
        if let biasRow {
            gemm.biasRow = UnsafePointer(biasRow.unsafeBaseAddress.assumingMemoryBound(to: Float.self))
            gemm.run(pool: pool)
            return
        }
        gemm.run(pool: pool)
        if inputs.count > 2, let c = inputs[2], beta != 0 {
            // General C: y += beta · broadcast(C).
            let beta = self.beta
            if relu {
                broadcastApply(y, c, y, pool: pool) { (a: Float, b: Float) -> Float in max(a + beta * b, 0) }
            } else {
                broadcastApply(y, c, y, pool: pool) { (a: Float, b: Float) -> Float in a + beta * b }
            }
        }
    }
}

extension GemmKernel: Tunable {
    static let forcingVariable = GEMMImplementation.forcingVariable

    func implementations(_ inputs: [TensorView?], _ outputs: [TensorView]) -> [String] {
        let shape = outputs[0].shape
        let k = transA ? inputs[0]!.shape[0] : inputs[0]!.shape[1]
        return GEMMImplementation.candidates(m: shape[0], n: shape[1], k: k, layout: packed?.layout).map(\.rawValue)
    }

    func using(_ implementation: String) -> any Kernel {
        var kernel = self
        kernel.implementation = GEMMImplementation(rawValue: implementation)
        return kernel
    }
}

/// MatMul with NumPy semantics: N-D × 2-D as one GEMM over flattened rows (weights pre-packed),
/// batched otherwise, 1-D operands promoted and squeezed.
struct MatMulKernel: ReluFusing, EpilogueFusing {
    let packed: PackedMatrix?
    var relu = false
    /// A following Add of a constant row folded in (set by the graph compiler, N-D x 2-D form),
    /// zero-padded to whole panels.
    var bias: Tensor?
    /// A following GELU computed on the output while it is hot (set by the graph compiler).
    var gelu: GeluForm?
    /// Set per plan by timing (``Tunable``) when OpenBLAS runs the N-D x 2-D form; nil lets it
    /// split by shape.
    var implementation: GEMMImplementation?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        if let weight = context.constants[1], weight.rank == 2, weight.dataType == .float32 {
            packed = try PackedMatrix(weight, transposed: false)
        } else {
            packed = nil
        }
    }

    var packedInputs: Set<Int> { packed == nil ? [] : [1] }
    /// Only a constant weight packed into panels is multiplied by our own kernels.
    var callsOpenBLAS: Bool { packed?.panelPointer == nil }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let a = inputs[0], let b = inputs[1] else { throw .invalidModel("missing input") }
        guard a.dataType == .float32, b.dataType == .float32 else {
            throw .unsupported("MatMul on \(a.dataType) is not supported (float32 only)")
        }
        guard !a.shape.isEmpty, !b.shape.isEmpty else { throw .invalidInput("MatMul inputs must not be scalars") }
        let aShape = a.shape.count == 1 ? [1] + a.shape : a.shape
        let bShape = b.shape.count == 1 ? b.shape + [1] : b.shape
        let (m, k) = (aShape[aShape.count - 2], aShape[aShape.count - 1])
        let (kb, n) = (bShape[bShape.count - 2], bShape[bShape.count - 1])
        guard k == kb else {
            throw .invalidInput("inputs \(a.shape) and \(b.shape) have inner dimensions \(k) and \(kb)")
        }
        guard let batch = Shape.broadcast(Array(aShape.dropLast(2)), Array(bShape.dropLast(2))) else {
            throw .invalidInput("batch dimensions of \(a.shape) and \(b.shape) do not broadcast")
        }
        var shape = batch + [m, n]
        if a.shape.count == 1 { shape.remove(at: shape.count - 2) }
        if b.shape.count == 1 { shape.removeLast() }
        return [ValueMeta(.float32, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let a = inputs[0]!, y = outputs[0]
        let aShape = a.shape.count == 1 ? [1] + a.shape : a.shape
        let k = aShape[aShape.count - 1]
        if let packed {
            // Every row of A, whatever its batch dims, meets the same B (the dropped constant's
            // view is not there to read).
            let rows = a.count / max(k, 1), n = packed.n
            let biasRow = bias.map { UnsafePointer($0.unsafeBaseAddress.assumingMemoryBound(to: Float.self)) }
            if let panels = packed.panelPointer {
                SmallGEMM.run(m: rows, n: n, k: k, a: a.floats, lda: k, panels: panels, bias: biasRow, c: y.floats, relu: relu, pool: pool)
            } else {
                var gemm = TiledGEMM(m: rows, n: n, k: k, a: a.floats, lda: k, b: packed.rowMajorPointer!, ldb: n, c: y.floats)
                gemm.relu = relu
                gemm.biasRow = biasRow
                gemm.split = implementation?.split ?? .auto
                gemm.run(pool: pool)
            }
            if let gelu { applyGelu(gelu, y, pool: pool) }
            return
        }
        let b = inputs[1]!
        let bShape = b.shape.count == 1 ? b.shape + [1] : b.shape
        let n = bShape[bShape.count - 1]
        if bShape.count == 2 {
            var gemm = TiledGEMM(m: a.count / max(k, 1), n: n, k: k, a: a.floats, lda: k, b: UnsafePointer(b.floats), ldb: n, c: y.floats)
            gemm.relu = relu
            gemm.split = implementation?.split ?? .auto
            gemm.run(pool: pool)
            return
        }
        let m = aShape[aShape.count - 2]
        let batchA = Array(aShape.dropLast(2)), batchB = Array(bShape.dropLast(2))
        let batch = Shape.broadcast(batchA, batchB)!
        let batchCount = batch.reduce(1, *)
        func offset(_ index: Int, _ dims: [Int], _ matrixSize: Int) -> Int {
            let padded = [Int](repeating: 1, count: batch.count - dims.count) + dims
            var rest = index, flat = 0, step = 1
            for dim in (0..<batch.count).reversed() {
                let i = rest % batch[dim]
                rest /= batch[dim]
                if padded[dim] != 1 { flat += i * step }
                step *= padded[dim]
            }
            return flat * matrixSize
        }
        func product(_ index: Int) -> TiledGEMM {
            var gemm = TiledGEMM(
                m: m, n: n, k: k,
                a: a.floats + offset(index, batchA, m * k), lda: k,
                b: b.floats + offset(index, batchB, k * n), ldb: n,
                c: y.floats + index * m * n)
            gemm.relu = relu
            return gemm
        }
        // Attention's batch x heads products are small: one thread each, all threads at once,
        // rather than every small product split over the pool in turn.
        let threads = pool.threadCount
        if batchCount >= threads, threads > 1 {
            let perTask = (batchCount + threads - 1) / threads
            pool.parallelFor(threads) { task in
                for index in task * perTask..<min(batchCount, (task + 1) * perTask) { product(index).runSingle() }
            }
        } else {
            for index in 0..<batchCount { product(index).run(pool: pool) }
        }
    }
}

extension MatMulKernel: Tunable {
    static let forcingVariable = GEMMImplementation.forcingVariable

    func implementations(_ inputs: [TensorView?], _ outputs: [TensorView]) -> [String] {
        guard let a = inputs[0] else { return [] }
        let k = a.shape.last ?? 0
        if let packed {
            return GEMMImplementation.candidates(m: a.count / max(k, 1), n: packed.n, k: k, layout: packed.layout).map(\.rawValue)
        }
        guard let b = inputs[1], b.shape.count == 2 else { return [] }
        return GEMMImplementation.candidates(m: a.count / max(k, 1), n: b.shape[1], k: k, layout: nil).map(\.rawValue)
    }

    func using(_ implementation: String) -> any Kernel {
        var kernel = self
        kernel.implementation = GEMMImplementation(rawValue: implementation)
        return kernel
    }
}

/// Which GELU a product's output goes through: ONNX's Gelu with approximate = none or tanh.
enum GeluForm: Sendable {
    case erf, tanh
}

/// A product that can take over the bias add and GELU after it (the transformer MLP's
/// MatMul + Add + GELU as one step, no buffer between them).
protocol EpilogueFusing: Kernel {
    var gelu: GeluForm? { get set }
}

/// GELU over a product's output, in chunks over the pool.
func applyGelu(_ form: GeluForm, _ y: TensorView, pool: ComputePool) {
    let p = y.floats
    forEachChunk(y.count, pool: pool, grain: 1 << 14) { range in
        CMaaSKernels_gelu(p + range.lowerBound, range.count, form == .tanh ? 1 : 0)
    }
}

import CMaaSKernels
import MaaSCore

/// Scaled dot-product attention as one step: softmax(scale · A·B + mask) · V over the last two
/// dims, batch dims broadcast as MatMul does, replacing the exporters' MatMul, Mul, Add,
/// Softmax, IsNaN/Where and MatMul (see ``CompiledModel/fuseAttention``). Each thread takes a
/// share of (batch, head, query-row) blocks; the scores live in one row of scratch per thread.
///
/// The Transposes around it (heads out of [batch, seq, heads, depth] and back) can be folded in
/// too: an operand then carries the permutation its Transpose applied, and is read in place
/// with permuted strides; the output is written straight into the layout its Transpose made.
struct AttentionKernel: Kernel {
    /// The product of the scalar Muls (or 1 / the Div) folded from around the first MatMul.
    let scale: Float
    let hasMask: Bool
    /// Softmax rows that are NaN (every key masked) become zeros, as the exporters' Where(IsNaN) does.
    let nanToZero: Bool
    /// For A, B and V: the perm of a Transpose folded in (the input is that Transpose's input).
    var permutations: [[Int]?] = [nil, nil, nil]
    /// The perm of a Transpose of the output folded in (the output is that Transpose's output).
    var outputPermutation: [Int]?

    struct Shapes {
        var batch: [Int]
        var rows: Int, depth: Int, keys: Int, valueWidth: Int
        var queryIs1D: Bool
        var output: [Int] { batch + (queryIs1D ? [] : [rows]) + [valueWidth] }
    }

    static func permuted(_ shape: [Int], _ perm: [Int]?) throws(InferenceError) -> [Int] {
        guard let perm else { return shape }
        guard perm.count == shape.count, Set(perm) == Set(0..<shape.count) else {
            throw .invalidInput("perm \(perm) is not a permutation of rank \(shape.count)")
        }
        return perm.map { shape[$0] }
    }

    /// Inputs: A [..., rows, depth], B [..., depth, keys], the mask (if any), V [..., keys, width].
    func shapes(_ a: [Int], _ b: [Int], _ mask: [Int]?, _ v: [Int]) throws(InferenceError) -> Shapes {
        guard !a.isEmpty, b.count >= 2, v.count >= 2 else {
            throw .unsupported("attention with operands \(a), \(b) and \(v): 1-D keys or values are not supported")
        }
        let queryIs1D = a.count == 1
        let a2 = queryIs1D ? [1] + a : a
        let (rows, depth) = (a2[a2.count - 2], a2[a2.count - 1])
        let (depthB, keys) = (b[b.count - 2], b[b.count - 1])
        guard depth == depthB else { throw .invalidInput("inputs \(a) and \(b) have inner dimensions \(depth) and \(depthB)") }
        guard let scoreBatch = Shape.broadcast(Array(a2.dropLast(2)), Array(b.dropLast(2))) else {
            throw .invalidInput("batch dimensions of \(a) and \(b) do not broadcast")
        }
        let scores = scoreBatch + [rows, keys]
        if let mask {
            guard Shape.broadcast(scores, mask) == scores else {
                throw .unsupported("attention mask \(mask) does not broadcast to the scores \(scores)")
            }
        }
        guard v[v.count - 2] == keys else { throw .invalidInput("scores \(scores) and values \(v) have inner dimensions \(keys) and \(v[v.count - 2])") }
        guard Shape.broadcast(scoreBatch, Array(v.dropLast(2))) == scoreBatch else {
            throw .unsupported("values \(v) do not broadcast to the scores' batch \(scoreBatch)")
        }
        return Shapes(batch: scoreBatch, rows: rows, depth: depth, keys: keys, valueWidth: v[v.count - 1], queryIs1D: queryIs1D)
    }

    private func operands<T>(_ inputs: [T?]) -> (a: T?, b: T?, mask: T?, v: T?) {
        (inputs[0], inputs[1], hasMask ? inputs[2] : nil, inputs[hasMask ? 3 : 2])
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        let (a, b, mask, v) = operands(inputs)
        guard let a, let b, let v, !hasMask || mask != nil else { throw .invalidModel("missing input") }
        guard [a, b, v].allSatisfy({ $0.dataType == .float32 }), mask.map({ $0.dataType == .float32 }) ?? true else {
            throw .unsupported("attention on \(a.dataType) is not supported (float32 only)")
        }
        let s = try shapes(
            try Self.permuted(a.shape, permutations[0]), try Self.permuted(b.shape, permutations[1]), mask?.shape,
            try Self.permuted(v.shape, permutations[2]))
        return [ValueMeta(.float32, try Self.permuted(s.output, outputPermutation))]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let (a, b, mask, v) = operands(inputs)
        let y = outputs[0]
        var shapeA = try Self.permuted(a!.shape, permutations[0])
        let s = try shapes(shapeA, try Self.permuted(b!.shape, permutations[1]), mask?.shape, try Self.permuted(v!.shape, permutations[2]))
        let rank = s.batch.count + 2
        var sourceA = a!.shape, permA = permutations[0]
        if s.queryIs1D { (shapeA, sourceA, permA) = ([1] + shapeA, [1] + sourceA, nil) }
        let strideA = broadcastStrides(sourceA, permutation: permA, rank: rank)
        let strideB = broadcastStrides(b!.shape, permutation: permutations[1], rank: rank)
        let strideV = broadcastStrides(v!.shape, permutation: permutations[2], rank: rank)
        let strideMask = mask.map { broadcastStrides($0.shape, rank: rank) }
        // The output's logical [batch..., rows, width] strides inside the buffer its Transpose made.
        var strideOut = Shape.strides(s.output)
        if let perm = outputPermutation {
            let written = Shape.strides(y.shape)
            strideOut = (0..<perm.count).map { dim in written[perm.firstIndex(of: dim)!] }
        }
        if s.queryIs1D { strideOut.insert(0, at: strideOut.count - 1) }
        let batchCount = s.batch.reduce(1, *)
        guard batchCount > 0, s.rows > 0, s.valueWidth > 0 else { return }
        let keys = s.keys
        if keys == 0 {
            // Softmax over no keys is empty; its product with V is a sum of nothing.
            y.floats.update(repeating: 0, count: y.count)
            return
        }
        // Blocks of query rows: enough tasks for every thread, at least 8 rows per task.
        let threads = pool.threadCount
        let rowBlock = max(1, min(s.rows, (batchCount * s.rows + threads * 2 - 1) / (threads * 2)), min(8, s.rows))
        let blocksPerBatch = (s.rows + rowBlock - 1) / rowBlock
        let tasks = batchCount * blocksPerBatch
        let (pa, pb, pv, pm, po) = (a!.floats, b!.floats, v!.floats, mask?.floats, y.floats)
        let (scale, nanToZero, batch) = (scale, nanToZero, s.batch)
        let gather = strideB[rank - 1] != 1
        let scratchCount = 2 * keys + (gather ? s.depth * keys : 0)
        let body: (Range<Int>) -> Void = { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: scratchCount) { scratch in
                for task in range {
                    let index = task / blocksPerBatch, block = task % blocksPerBatch
                    var offsetA = 0, offsetB = 0, offsetV = 0, offsetMask = 0, offsetOut = 0, rest = index
                    for dim in stride(from: batch.count - 1, through: 0, by: -1) {
                        let i = rest % batch[dim]
                        rest /= batch[dim]
                        offsetA += i * strideA[dim]
                        offsetB += i * strideB[dim]
                        offsetV += i * strideV[dim]
                        offsetOut += i * strideOut[dim]
                        if let strideMask { offsetMask += i * strideMask[dim] }
                    }
                    var parameters = CMaaSKernels_attention(
                        q: pa + offsetA, q_row: strideA[rank - 2], b: pb + offsetB, b_row: strideB[rank - 2], b_column: strideB[rank - 1],
                        v: pv + offsetV, v_row: strideV[rank - 2],
                        mask: pm.map { UnsafePointer($0 + offsetMask) }, mask_row: strideMask?[rank - 2] ?? 0,
                        mask_column: strideMask?[rank - 1] ?? 0,
                        out: po + offsetOut, out_row: strideOut[rank - 2],
                        depth: Int32(s.depth), keys: Int32(keys), value_width: Int32(s.valueWidth), scale: scale, nan_to_zero: nanToZero ? 1 : 0)
                    let first = block * rowBlock
                    CMaaSKernels_attention_rows(&parameters, Int32(first), Int32(min(s.rows, first + rowBlock)), scratch.baseAddress!)
                }
            }
        }
        if tasks >= 2, threads > 1 {
            let perThread = (tasks + threads - 1) / threads
            pool.parallelFor(min(threads, tasks)) { thread in body(thread * perThread..<min(tasks, (thread + 1) * perThread)) }
        } else {
            body(0..<tasks)
        }
    }
}

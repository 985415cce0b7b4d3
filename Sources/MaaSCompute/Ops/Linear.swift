import CMaaSKernels
import Glibc
import MaaSCore

func getenvInt(_ name: String) -> Int? {
    getenv(name).flatMap { Int(String(cString: $0)) }
}

/// A right-hand matrix laid out [K, N] row-major once, at load: measured here 1.2-1.6x faster
/// through OpenBLAS than ONNX's [N, K] (transB=1) layout at small batch.
struct PackedMatrix: Sendable {
    let k: Int
    let n: Int
    let storage: Tensor
    /// The same matrix as 16-column panels (K x 16 each, zero-padded) for the small-batch
    /// kernels, when this CPU has them.
    let panels: Tensor?

    init(_ tensor: Tensor, transposed: Bool) throws(InferenceError) {
        guard tensor.rank == 2, tensor.dataType == .float32 else {
            throw .invalidModel("weight must be a 2-D float32 tensor, got \(tensor.dataType) \(tensor.shape)")
        }
        k = transposed ? tensor.shape[1] : tensor.shape[0]
        n = transposed ? tensor.shape[0] : tensor.shape[1]
        panels = try Self.panels(tensor, transposed: transposed)
        if !transposed {
            storage = tensor
            return
        }
        var packed = try Tensor(zeros: .float32, shape: [k, n])
        let (k, n) = (self.k, self.n)
        tensor.withUnsafeBytes { source in
            let src = source.bindMemory(to: Float.self)
            packed.withUnsafeMutableBytes { target in
                let dst = target.bindMemory(to: Float.self)
                for row in 0..<n {
                    for col in 0..<k { dst[col * n + row] = src[row * k + col] }
                }
            }
        }
        storage = packed
    }

    var pointer: UnsafePointer<Float> { UnsafePointer(storage.unsafeBaseAddress.assumingMemoryBound(to: Float.self)) }

    var panelPointer: UnsafePointer<Float>? {
        panels.map { UnsafePointer($0.unsafeBaseAddress.assumingMemoryBound(to: Float.self)) }
    }

    private static func panels(_ tensor: Tensor, transposed: Bool) throws(InferenceError) -> Tensor? {
        guard SmallGEMM.isAvailable else { return nil }
        let k = transposed ? tensor.shape[1] : tensor.shape[0]
        let n = transposed ? tensor.shape[0] : tensor.shape[1]
        let count = (n + 15) / 16
        var panels = try Tensor(zeros: .float32, shape: [count, k, 16])
        tensor.withUnsafeBytes { source in
            let src = source.bindMemory(to: Float.self)
            panels.withUnsafeMutableBytes { target in
                let dst = target.bindMemory(to: Float.self)
                for column in 0..<n {
                    let (panel, lane) = (column / 16, column % 16)
                    for row in 0..<k {
                        dst[(panel * k + row) * 16 + lane] = transposed ? src[column * k + row] : src[row * n + column]
                    }
                }
            }
        }
        return panels
    }
}

extension SmallGEMM {
    /// C[m x n] = A[m x k] . panels + rowBias, A's rows split over the pool when `pool` is given
    /// (B here is per-call data, e.g. im2col columns, already in panel layout).
    static func runRows(
        m: Int, k: Int, a: UnsafePointer<Float>, panels: UnsafePointer<Float>, panelCount: Int,
        rowBias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>, n: Int, relu: Bool = false, pool: ComputePool?
    ) {
        let groups = (m + 5) / 6
        // One contiguous share of row groups per thread: a task per group costs more in
        // hand-offs than it gains at these sizes.
        let tasks = min(pool?.threadCount ?? 1, groups)
        let perTask = (groups + tasks - 1) / tasks
        let body: (Int) -> Void = { task in
            for group in task * perTask..<min(groups, (task + 1) * perTask) {
                let row = group * 6, rows = min(6, m - row)
                CMaaSKernels_gemm_panels_row_bias(
                    Int32(rows), Int32(k), a + row * k, k, panels, Int32(panelCount),
                    rowBias.map { $0 + row }, c + row * n, n, Int32(n), relu ? 1 : 0)
            }
        }
        if let pool, tasks > 1 {
            pool.parallelFor(tasks, body)
        } else {
            body(0)
        }
    }
}

/// Our AVX2/FMA kernels for few rows (C in CMaaSKernels): B streamed once from 16-column panels,
/// where OpenBLAS would pack both operands on every call.
enum SmallGEMM {
    static let isAvailable = getenv("MAAS_NO_SMALL_GEMM") == nil && CMaaSKernels_available() != 0
    /// Up to this many rows use the panel kernels, more go to OpenBLAS. With AVX-512 ours won at
    /// every batch size measured (scripts/bench-engine); with AVX2 only up to about 32 rows.
    static let maxRows = getenvInt("MAAS_SMALL_GEMM_ROWS") ?? (CMaaSKernels_has_avx512() != 0 ? Int.max : 32)

    /// C[m x n] = A[m x k] . B + bias over the pool, splitting panels between threads.
    static func run(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, panels: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>, relu: Bool = false, pool: ComputePool
    ) {
        let panelCount = (n + 15) / 16
        let threads = m * n * k < (1 << 15) ? 1 : min(pool.threadCount, panelCount)
        let perThread = (panelCount + threads - 1) / threads
        // Panels per pass over the rows: with several row groups, 4 x K x 16 floats stay in L2 for
        // the next group; a single group uses each panel once, so it takes the widest kernel.
        let block = m <= 6 ? 8 : 4
        pool.parallelFor(threads) { thread in
            let first = thread * perThread, last = min(panelCount, first + perThread)
            var panel = first
            while panel < last {
                let count = min(block, last - panel)
                var row = 0
                while row < m {
                    let rows = min(6, m - row)
                    CMaaSKernels_gemm_panels(
                        Int32(rows), Int32(k), a + row * lda, lda,
                        panels + panel * k * 16, Int32(count),
                        bias.map { $0 + panel * 16 }, c + row * n + panel * 16, n, Int32(n - panel * 16), relu ? 1 : 0)
                    row += rows
                }
                panel += count
            }
        }
    }
}

/// C[m×n] = alpha · op(A) · B + bias, tiled over the pool: rows when there are enough of them,
/// output columns otherwise (batch 1), each tile a single-threaded OpenBLAS call.
struct TiledGEMM {
    // Pointers into buffers that outlive the call; tiles write disjoint parts of `c`.
    var m: Int, n: Int, k: Int
    var alpha: Float = 1
    var a: UnsafePointer<Float>
    var lda: Int
    var transposeA = false
    var b: UnsafePointer<Float>
    var ldb: Int
    var transposeB = false
    var c: UnsafeMutablePointer<Float>
    /// A row of n values added to every output row (already scaled by beta).
    var biasRow: UnsafePointer<Float>?
    /// Add to what `c` holds instead of overwriting it.
    var accumulate = false
    /// Clamp the result at zero (a Relu fused into this product).
    var relu = false
    /// How tiles divide the product between threads.
    var split = Split.auto

    enum Split {
        /// Rows when there are at least 8 per thread, else columns.
        case auto, rows, columns
    }

    /// sgemm with one row is 3x slower than sgemv on Debian's OpenBLAS 0.3.21 (measured here).
    static let gemvRows = 1

    /// The whole product on the calling thread.
    func runSingle() {
        tile(rows: 0..<m, columns: 0..<n)
    }

    func run(pool: ComputePool) {
        let work = m * n * k
        let threads = pool.threadCount
        if work < (1 << 15) || threads == 1 {
            tile(rows: 0..<m, columns: 0..<n)
            return
        }
        let byRows = switch split {
        case .auto: m >= threads * 8
        case .rows: m >= threads
        case .columns: false
        }
        if byRows {
            let chunk = ((m + threads - 1) / threads + 3) / 4 * 4
            let chunks = (m + chunk - 1) / chunk
            pool.parallelFor(chunks) { index in
                tile(rows: index * chunk..<min(m, (index + 1) * chunk), columns: 0..<n)
            }
        } else {
            // Columns in multiples of 16 floats so tiles do not share cache lines.
            let chunk = max(16, ((n + threads - 1) / threads + 15) / 16 * 16)
            let chunks = (n + chunk - 1) / chunk
            pool.parallelFor(chunks) { index in
                tile(rows: 0..<m, columns: index * chunk..<min(n, (index + 1) * chunk))
            }
        }
    }

    private func tile(rows: Range<Int>, columns: Range<Int>) {
        guard !rows.isEmpty, !columns.isEmpty else { return }
        let out = c + rows.lowerBound * n + columns.lowerBound
        var beta: Float = accumulate ? 1 : 0
        if let biasRow {
            for row in 0..<rows.count {
                (out + row * n).update(from: biasRow + columns.lowerBound, count: columns.count)
            }
            beta = 1
        }
        if k == 0 {
            if biasRow == nil && !accumulate { for row in 0..<rows.count { (out + row * n).update(repeating: 0, count: columns.count) } }
            return
        }
        let aTile = transposeA ? a + rows.lowerBound : a + rows.lowerBound * lda
        let bTile = transposeB ? b + columns.lowerBound * ldb : b + columns.lowerBound
        if !transposeA && rows.count <= Self.gemvRows {
            // OpenBLAS packs both operands on every sgemm call, which dominates when A has few
            // rows; GEMV streams B once per row without packing.
            for row in 0..<rows.count {
                BLAS.sgemv(k: k, n: columns.count, alpha: alpha, x: aTile + row * lda, b: bTile, ldb: ldb, transposeB: transposeB, beta: beta, y: out + row * n)
            }
            if relu { clamp(out, rows: rows.count, columns: columns.count) }
            return
        }
        BLAS.sgemm(
            m: rows.count, n: columns.count, k: k, alpha: alpha,
            a: aTile, lda: lda, transposeA: transposeA,
            b: bTile, ldb: ldb, transposeB: transposeB,
            beta: beta, c: out, ldc: n)
        if relu { clamp(out, rows: rows.count, columns: columns.count) }
    }

    /// The fused Relu, on the tile just computed while it is still in cache.
    private func clamp(_ out: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        for row in 0..<rows {
            let line = out + row * n
            for column in 0..<columns { line[column] = max(line[column], 0) }
        }
    }
}

/// Gemm: Y = alpha · A' · B' + beta · C.
struct GemmKernel: ReluFusing {
    let alpha: Float
    let beta: Float
    let transA: Bool
    let transB: Bool
    let packed: PackedMatrix?
    /// beta · C as one row, when C is a constant [N] or [1, N] (zero-padded to whole panels).
    let biasRow: Tensor?
    /// A following Relu computed in the same pass (set by the graph compiler).
    var relu = false
    /// Set per plan by timing (``Tunable``); nil takes the row-count heuristic.
    var implementation: GEMMImplementation?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...3)
        alpha = try context.float("alpha", 1)
        beta = try context.float("beta", 1)
        transA = try context.int("transA", 0) != 0
        transB = try context.int("transB", 0) != 0
        if let weight = context.constants[1] {
            do {
                packed = try PackedMatrix(weight, transposed: transB)
            } catch {
                throw context.error(error.message)
            }
        } else {
            packed = nil
        }
        if context.constants.count > 2, let c = context.constants[2], c.dataType == .float32,
            c.rank == 1 || (c.rank == 2 && c.shape[0] == 1), packed.map({ c.shape.last == $0.n }) ?? false
        {
            let beta = self.beta
            let values = c.scalars(as: Float.self).map { $0 * beta }
            let padded = (values.count + 15) / 16 * 16
            biasRow = try Tensor(values + [Float](repeating: 0, count: padded - values.count), shape: [padded])
        } else {
            biasRow = nil
        }
    }

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
        let a = inputs[0]!, y = outputs[0]
        let (m, n) = (y.shape[0], y.shape[1])
        let k = transA ? a.shape[0] : a.shape[1]
        var gemm: TiledGEMM
        if let packed {
            gemm = TiledGEMM(m: m, n: n, k: k, a: a.floats, lda: a.shape[1], b: packed.pointer, ldb: n, c: y.floats)
        } else {
            let b = inputs[1]!
            gemm = TiledGEMM(m: m, n: n, k: k, a: a.floats, lda: a.shape[1], b: b.floats, ldb: b.shape[1], transposeB: transB, c: y.floats)
        }
        gemm.alpha = alpha
        gemm.transposeA = transA
        let bias = biasRow.map { UnsafePointer($0.unsafeBaseAddress.assumingMemoryBound(to: Float.self)) }
        if let panels = panels(inputs), implementation.map({ $0 == .panels }) ?? (m <= SmallGEMM.maxRows) {
            SmallGEMM.run(m: m, n: n, k: k, a: a.floats, lda: a.shape[1], panels: panels, bias: bias, c: y.floats, relu: relu, pool: pool)
            return
        }
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
                broadcastApply(y, c, y, Float.self, pool: pool) { max($0 + beta * $1, 0) }
            } else {
                broadcastApply(y, c, y, Float.self, pool: pool) { $0 + beta * $1 }
            }
        }
    }
}

extension GemmKernel: Tunable {
    static let forcingVariable = GEMMImplementation.forcingVariable

    /// The packed panels, when the panel kernels can compute this product.
    func panels(_ inputs: [TensorView?]) -> UnsafePointer<Float>? {
        guard !transA, alpha == 1, biasRow != nil || inputs.count < 3 || inputs[2] == nil else { return nil }
        return packed?.panelPointer
    }

    func implementations(_ inputs: [TensorView?], _ outputs: [TensorView]) -> [String] {
        let shape = outputs[0].shape
        let k = transA ? inputs[0]!.shape[0] : inputs[0]!.shape[1]
        return GEMMImplementation.candidates(m: shape[0], n: shape[1], k: k, panels: panels(inputs) != nil).map(\.rawValue)
    }

    func using(_ implementation: String) -> any Kernel {
        var kernel = self
        kernel.implementation = GEMMImplementation(rawValue: implementation)
        return kernel
    }
}

/// MatMul with NumPy semantics: N-D × 2-D as one GEMM over flattened rows (weights pre-packed),
/// batched otherwise, 1-D operands promoted and squeezed.
struct MatMulKernel: ReluFusing {
    let packed: PackedMatrix?
    var relu = false
    /// Set per plan by timing (``Tunable``), for the N-D x 2-D form; nil takes the heuristic.
    var implementation: GEMMImplementation?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        if let weight = context.constants[1], weight.rank == 2, weight.dataType == .float32 {
            packed = try PackedMatrix(weight, transposed: false)
        } else {
            packed = nil
        }
    }

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
        let a = inputs[0]!, b = inputs[1]!, y = outputs[0]
        let aShape = a.shape.count == 1 ? [1] + a.shape : a.shape
        let bShape = b.shape.count == 1 ? b.shape + [1] : b.shape
        let k = aShape[aShape.count - 1]
        let n = bShape[bShape.count - 1]
        if bShape.count == 2 {
            // Every row of A, whatever its batch dims, meets the same B.
            let rows = a.count / max(k, 1)
            if let panels = packed?.panelPointer, implementation.map({ $0 == .panels }) ?? (rows <= SmallGEMM.maxRows) {
                SmallGEMM.run(m: rows, n: n, k: k, a: a.floats, lda: k, panels: panels, bias: nil, c: y.floats, relu: relu, pool: pool)
                return
            }
            var gemm = TiledGEMM(
                m: rows, n: n, k: k, a: a.floats, lda: k,
                b: packed?.pointer ?? UnsafePointer(b.floats), ldb: n, c: y.floats)
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
        for index in 0..<batchCount {
            var gemm = TiledGEMM(
                m: m, n: n, k: k,
                a: a.floats + offset(index, batchA, m * k), lda: k,
                b: b.floats + offset(index, batchB, k * n), ldb: n,
                c: y.floats + index * m * n)
            gemm.relu = relu
            gemm.run(pool: pool)
        }
    }
}

extension MatMulKernel: Tunable {
    static let forcingVariable = GEMMImplementation.forcingVariable

    func implementations(_ inputs: [TensorView?], _ outputs: [TensorView]) -> [String] {
        guard let a = inputs[0], let b = inputs[1], b.shape.count == 2 else { return [] }
        let k = a.shape.last ?? 0, n = b.shape[1]
        return GEMMImplementation.candidates(m: a.count / max(k, 1), n: n, k: k, panels: packed?.panelPointer != nil).map(\.rawValue)
    }

    func using(_ implementation: String) -> any Kernel {
        var kernel = self
        kernel.implementation = GEMMImplementation(rawValue: implementation)
        return kernel
    }
}

/// How a GEMM runs: our panel kernels (AVX-512 or AVX2, the panels split between threads) or
/// single-threaded OpenBLAS calls on the pool, one per row or column tile.
enum GEMMImplementation: String, Sendable {
    case panels
    case blasRows = "blas-rows"
    case blasColumns = "blas-columns"

    static let forcingVariable = "MAAS_KERNEL"

    var split: TiledGEMM.Split {
        switch self {
        case .panels, .blasRows: .rows
        case .blasColumns: .columns
        }
    }

    /// What applies to an m x k x n product, the heuristic's pick first. Products too small to
    /// be worth timing (under 2^15 multiply-adds) keep the heuristic's pick alone.
    static func candidates(m: Int, n: Int, k: Int, panels: Bool) -> [GEMMImplementation] {
        let heuristic: GEMMImplementation = panels && m <= SmallGEMM.maxRows ? .panels : .blasRows
        guard m * n * k >= 1 << 15 else { return [heuristic] }
        var all: [GEMMImplementation] = panels ? [.panels] : []
        if m >= 2 { all.append(.blasRows) }
        if n >= 32 { all.append(.blasColumns) }
        return [heuristic] + all.filter { $0 != heuristic }
    }
}

import CMaaSKernels
import Glibc
import MaaSCore

func getenvInt(_ name: String) -> Int? {
    getenv(name).flatMap { Int(String(cString: $0)) }
}

/// A constant right-hand matrix, packed once at load into the one layout this process's GEMMs
/// read, and held once (the file's copy is dropped once every reader has packed it):
/// - 16-column panels (K x 16 each, zero-padded) for our kernels, when the CPU has them. Measured
///   here they matched or beat OpenBLAS from 128 to 4,096 rows (MiniLM, the wide MLP) and won
///   below that, so a second, row-major copy for OpenBLAS at large batches is not worth its memory.
/// - [K, N] row-major for OpenBLAS otherwise (no AVX2, `MAAS_KERNEL=blas-rows|blas-columns`, or a
///   Gemm the panel kernels cannot compute): 1.2-1.6x faster here than ONNX's [N, K] (transB=1)
///   layout at small batch.
struct PackedMatrix: Sendable {
    enum Layout: Sendable {
        case panels, rowMajor
    }

    let k: Int
    let n: Int
    let layout: Layout
    let storage: Tensor

    /// Panels unless the CPU lacks our kernels or `MAAS_KERNEL` asks for OpenBLAS first.
    static let preferredLayout: Layout = SmallGEMM.isAvailable && !GEMMImplementation.forcedToBLAS ? .panels : .rowMajor

    init(_ tensor: Tensor, transposed: Bool, panelsApply: Bool = true) throws(InferenceError) {
        guard tensor.rank == 2, tensor.dataType == .float32 else {
            throw .invalidModel("weight must be a 2-D float32 tensor, got \(tensor.dataType) \(tensor.shape)")
        }
        k = transposed ? tensor.shape[1] : tensor.shape[0]
        n = transposed ? tensor.shape[0] : tensor.shape[1]
        layout = panelsApply ? Self.preferredLayout : .rowMajor
        switch layout {
        case .panels: storage = try Self.panels(tensor, k: k, n: n, transposed: transposed)
        case .rowMajor where !transposed: storage = tensor
        case .rowMajor: storage = try Self.rowMajor(tensor, k: k, n: n)
        }
    }

    private var pointer: UnsafePointer<Float> { UnsafePointer(storage.unsafeBaseAddress.assumingMemoryBound(to: Float.self)) }
    var panelPointer: UnsafePointer<Float>? { layout == .panels ? pointer : nil }
    var rowMajorPointer: UnsafePointer<Float>? { layout == .rowMajor ? pointer : nil }

    private static func rowMajor(_ transposed: Tensor, k: Int, n: Int) throws(InferenceError) -> Tensor {
        var packed = try Tensor(zeros: .float32, shape: [k, n])
        transposed.withUnsafeBytes { source in
            let src = source.bindMemory(to: Float.self)
            packed.withUnsafeMutableBytes { target in
                let dst = target.bindMemory(to: Float.self)
                for row in 0..<n {
                    for col in 0..<k { dst[col * n + row] = src[row * k + col] }
                }
            }
        }
        return packed
    }

    private static func panels(_ tensor: Tensor, k: Int, n: Int, transposed: Bool) throws(InferenceError) -> Tensor {
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

/// Our AVX2/AVX-512 kernels on B's 16-column panels (C in CMaaSKernels): at few rows B streams
/// through once, where OpenBLAS would pack both operands on every call; at many rows a block of
/// panels stays in L2 while every row group passes over it.
enum SmallGEMM {
    static let isAvailable = getenv("MAAS_NO_SMALL_GEMM") == nil && CMaaSKernels_available() != 0

    /// C[m x n] = A[m x k] . B + bias over the pool, splitting panels between threads.
    static func run(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, panels: UnsafePointer<Float>,
        bias: UnsafePointer<Float>?, c: UnsafeMutablePointer<Float>, relu: Bool = false, pool: ComputePool
    ) {
        let panelCount = (n + 15) / 16
        let threads = m * n * k < (1 << 15) ? 1 : min(pool.threadCount, max(panelCount, (m + 5) / 6))
        // Panels are split between threads; a narrow product (a classifier head: fewer panels
        // than threads) over many rows splits its rows instead.
        let byRows = panelCount < threads
        let perThread = byRows ? ((m + 5) / 6 + threads - 1) / threads * 6 : (panelCount + threads - 1) / threads
        // Panels per pass over the rows: with several row groups, a block of about 256 KiB (half of
        // a Zen 3 or Skylake-SP L2) stays cached for the next group (MiniLM at 16 rows: K = 1536
        // takes 2 panels, K = 384 takes 8); a single group uses each panel once, so it takes the
        // widest kernel.
        let block = m <= 6 ? 8 : max(2, min(8, (256 << 10) / max(1, k * 64)))
        pool.parallelFor(threads) { thread in
            let panelRange = byRows ? 0..<panelCount : thread * perThread..<min(panelCount, (thread + 1) * perThread)
            let rowRange = byRows ? min(m, thread * perThread)..<min(m, (thread + 1) * perThread) : 0..<m
            var panel = panelRange.lowerBound
            while panel < panelRange.upperBound {
                let count = min(block, panelRange.upperBound - panel)
                var row = rowRange.lowerBound
                while row < rowRange.upperBound {
                    let rows = min(6, rowRange.upperBound - row)
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

    /// What applies to an m x k x n product whose B is in `layout` (nil: B is not a constant,
    /// OpenBLAS reads it where it is). Products too small to be worth timing (under 2^15
    /// multiply-adds) keep OpenBLAS by rows alone.
    static func candidates(m: Int, n: Int, k: Int, layout: PackedMatrix.Layout?) -> [GEMMImplementation] {
        if layout == .panels { return [.panels] }
        guard m * n * k >= 1 << 15 else { return [.blasRows] }
        return n >= 32 ? [.blasRows, .blasColumns] : [.blasRows]
    }

    /// `MAAS_KERNEL` lists an OpenBLAS implementation before any other GEMM one, so constant
    /// matrices are packed for OpenBLAS.
    static let forcedToBLAS: Bool = {
        guard let value = getenv(forcingVariable) else { return false }
        let listed = String(cString: value).split(separator: ",").compactMap { GEMMImplementation(rawValue: String($0)) }
        return listed.first.map { $0 != .panels } ?? false
    }()
}

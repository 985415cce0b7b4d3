internal import COpenBLAS

/// The OpenBLAS entry points the engine and the trainer use. Only this file imports COpenBLAS.
public enum BLAS {
    /// OpenBLAS's own threads would compete with the compute pool, so it runs single-threaded
    /// and the pool calls it per tile (scripts/bench-engine measures the alternative by setting
    /// MAAS_OPENBLAS_THREADS with a one-thread pool).
    static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(count))
    }

    /// y[n] = alpha · x[k] · B[k×n] + beta · y, B row-major with leading dim ldb (or B[n×k] if transposed).
    @inline(__always)
    static func sgemv(
        k: Int, n: Int, alpha: Float, x: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int, transposeB: Bool,
        beta: Float, y: UnsafeMutablePointer<Float>
    ) {
        if transposeB {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), alpha, b, Int32(ldb), x, 1, beta, y, 1)
        } else {
            cblas_sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(n), alpha, b, Int32(ldb), x, 1, beta, y, 1)
        }
    }

    /// C[m×n] = alpha · A[m×k] · B[k×n] + beta · C, all row-major with the given leading dims.
    @inline(__always)
    public static func sgemm(
        m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

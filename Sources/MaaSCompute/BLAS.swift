internal import COpenBLAS
import Glibc
public import MaaSCore

/// The OpenBLAS entry points the engine and the trainer use. Only this file imports COpenBLAS.
///
/// OpenBLAS is opened on first need rather than linked. Linked, it cost every process 2.1 MB of
/// its 24.4 MB idle RSS (its own pages, libgfortran and libquadmath, which nothing else uses, and
/// the thread it starts when loaded), though a server whose models run on our panel kernels
/// never calls it. Kernels that may call it open it when they are built (``require()``), so a
/// missing library fails that model's load with a message, not a forward pass.
public enum BLAS {
    /// Debian's libopenblas0 (any of its pthread, OpenMP or serial builds, by alternatives), or
    /// the file `MAAS_OPENBLAS_LIBRARY` names.
    static let libraryName = getenv("MAAS_OPENBLAS_LIBRARY").map { String(cString: $0) } ?? "libopenblas.so.0"

    private struct EntryPoints: @unchecked Sendable {
        let sgemm: maas_cblas_sgemm_fn
        let sgemv: maas_cblas_sgemv_fn
    }

    private static let library: Result<EntryPoints, InferenceError> = open()

    /// Opens OpenBLAS unless it is open already; throws, naming the file and why, if it cannot be.
    public static func require() throws(InferenceError) {
        _ = try library.get()
    }

    private static var entryPoints: EntryPoints {
        switch library {
        case .success(let entryPoints): entryPoints
        case .failure(let error): fatalError("OpenBLAS: \(error.message), and a kernel that calls it was built without require()")
        }
    }

    private static func open() -> Result<EntryPoints, InferenceError> {
        func failure(_ what: String) -> Result<EntryPoints, InferenceError> {
            let reason = dlerror().map { String(cString: $0) } ?? "no reason given"
            return .failure(InferenceError(.unavailable, "\(libraryName) \(what): \(reason) (Debian's libopenblas0 provides it)"))
        }
        guard let handle = dlopen(libraryName, RTLD_NOW | RTLD_LOCAL) else { return failure("could not be opened") }
        guard let sgemm = dlsym(handle, "cblas_sgemm"), let sgemv = dlsym(handle, "cblas_sgemv"),
            let setThreads = dlsym(handle, "openblas_set_num_threads")
        else { return failure("lacks an entry point") }
        // OpenBLAS's own threads would compete with the compute pool, so it runs single-threaded
        // and the pool calls it per tile (scripts/bench-engine measures the alternative by setting
        // MAAS_OPENBLAS_THREADS with a one-thread pool).
        unsafeBitCast(setThreads, to: maas_openblas_set_num_threads_fn.self)(Int32(getenvInt("MAAS_OPENBLAS_THREADS") ?? 1))
        return .success(EntryPoints(
            sgemm: unsafeBitCast(sgemm, to: maas_cblas_sgemm_fn.self),
            sgemv: unsafeBitCast(sgemv, to: maas_cblas_sgemv_fn.self)))
    }

    /// y[n] = alpha · x[k] · B[k×n] + beta · y, B row-major with leading dim ldb (or B[n×k] if transposed).
    @inline(__always)
    static func sgemv(
        k: Int, n: Int, alpha: Float, x: UnsafePointer<Float>, b: UnsafePointer<Float>, ldb: Int, transposeB: Bool,
        beta: Float, y: UnsafeMutablePointer<Float>
    ) {
        if transposeB {
            entryPoints.sgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(k), alpha, b, Int32(ldb), x, 1, beta, y, 1)
        } else {
            entryPoints.sgemv(CblasRowMajor, CblasTrans, Int32(k), Int32(n), alpha, b, Int32(ldb), x, 1, beta, y, 1)
        }
    }

    /// C[m×n] = alpha · A[m×k] · B[k×n] + beta · C, all row-major with the given leading dims.
    /// The caller has called ``require()``.
    @inline(__always)
    public static func sgemm(
        m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        entryPoints.sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

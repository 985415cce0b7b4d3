// Built only with the MPI trait (`swift build --traits MPI`): without it this module is empty,
// so CMPI's mpi.h and libmpi are needed only by builds that ask for them.
#if MPI
internal import CMPI
import Glibc
public import MaaSTraining

/// `MPI_COMM_WORLD` as training's ``DataParallelGroup``: one per process, for the process's
/// life (MPI cannot be initialized twice).
///
/// ```swift
/// let group = try MPIGroup.start()   // under mpirun -np N
/// let result = try trainer.fit(share, share: DataShare(...), options: options, group: group)
/// group.finish()
/// ```
public final class MPIGroup: DataParallelGroup {
    public let rank: Int
    public let size: Int
    private let world: MPI_Comm

    /// Initializes MPI. Training calls MPI from a compute-pool thread, one call at a time, so
    /// it asks for `MPI_THREAD_SERIALIZED`.
    public static func start() throws -> MPIGroup {
        var provided: Int32 = 0
        let status = MPI_Init_thread(nil, nil, Int32(MPI_THREAD_SERIALIZED), &provided)
        guard status == MPI_SUCCESS else { throw DataParallelError(message: "MPI_Init_thread failed: \(errorString(status))") }
        guard provided >= Int32(MPI_THREAD_SERIALIZED) else {
            throw DataParallelError(message: "this MPI gives thread level \(provided); training needs MPI_THREAD_SERIALIZED")
        }
        let world = CMPI_comm_world()
        var rank: Int32 = 0, size: Int32 = 0
        MPI_Comm_rank(world, &rank)
        MPI_Comm_size(world, &size)
        return MPIGroup(world: world, rank: Int(rank), size: Int(size))
    }

    private init(world: MPI_Comm?, rank: Int, size: Int) {
        self.world = world!
        self.rank = rank
        self.size = size
    }

    public func sumInPlace(_ values: UnsafeMutablePointer<Float>, count: Int) {
        // One call per step; MPI counts are Int32, so larger models go in chunks of 2^30.
        var offset = 0
        repeat {
            let chunk = min(count - offset, 1 << 30)
            let status = MPI_Allreduce(CMPI_in_place(), values + offset, Int32(chunk), CMPI_float(), CMPI_sum(), world)
            check(status, "MPI_Allreduce")
            offset += chunk
        } while offset < count
    }

    public func allGather(_ value: UInt64) -> [UInt64] {
        var mine = value
        var all = [UInt64](repeating: 0, count: size)
        let status = all.withUnsafeMutableBufferPointer { buffer in
            MPI_Allgather(&mine, 1, CMPI_uint64(), buffer.baseAddress, 1, CMPI_uint64(), world)
        }
        check(status, "MPI_Allgather")
        return all
    }

    /// Waits for every rank, so that none exits (which mpirun reports as a failure of the job)
    /// while another still works, then shuts MPI down.
    public func finish() {
        check(MPI_Barrier(world), "MPI_Barrier")
        MPI_Finalize()
    }

    /// Ends every rank of the job: mpirun kills the others and exits with `code`.
    public func abort(code: Int32) -> Never {
        MPI_Abort(world, code)
        exit(code)
    }

    /// MPI's default handler already aborts the job on an error; this is for the ones it returns.
    private func check(_ status: Int32, _ call: String) {
        guard status != MPI_SUCCESS else { return }
        let line = Array("rank \(rank): \(call) failed: \(Self.errorString(status))\n".utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        abort(code: 1)
    }

    private static func errorString(_ status: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING) + 1)
        var length: Int32 = 0
        MPI_Error_string(status, &buffer, &length)
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
#endif

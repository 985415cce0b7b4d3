import Dispatch
import Glibc
import MaaSCore
import MaaSTraining

#if MPI
import MaaSDistributed
#endif

/// The ranks of `mpirun -np N maas train ...`: every rank trains on its share of each step,
/// rank 0 alone prints and writes.
struct TrainingRanks {
    let group: any DataParallelGroup
    private let finishGroup: () -> Void
    private let abortGroup: (Int32) -> Never
    private let terminationWatch: any DispatchSourceSignal

    var rank: Int { group.rank }
    var size: Int { group.size }
    var isLeader: Bool { rank == 0 }

    /// Environment variables MPI launchers set in every rank.
    static var launchedSize: Int? {
        for name in ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"] {
            if let value = getenv(name).flatMap({ Int(String(cString: $0)) }) { return value }
        }
        return nil
    }

    /// The job's ranks when an MPI launcher started this process; nil for a lone `maas train`.
    /// - Throws: when started by a launcher but built without MPI, since N lone copies would
    ///   each train the whole model and each write it.
    static func start() throws -> TrainingRanks? {
        guard let launched = launchedSize else { return nil }
        #if MPI
        // Ranks on one machine share its cores: each gets its part, unless told otherwise.
        if getenv("MAAS_COMPUTE_THREADS") == nil, let local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE").flatMap({ Int(String(cString: $0)) }), local > 1 {
            let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
            setenv("MAAS_COMPUTE_THREADS", String(max(1, cores / local)), 1)
        }
        let group = try MPIGroup.start()
        return TrainingRanks(group: group, finish: group.finish, abort: group.abort(code:))
        #else
        guard launched <= 1 else {
            throw TrainingError(
                "started as one of \(launched) MPI ranks, but this maas was built without MPI; build it with "
                    + "`swift build --traits MPI` (needs libopenmpi-dev), or run `maas train` alone")
        }
        return nil
        #endif
    }

    private init(group: any DataParallelGroup, finish: @escaping () -> Void, abort: @escaping (Int32) -> Never) {
        self.group = group
        finishGroup = finish
        abortGroup = abort
        // mpirun ends the job with SIGTERM when a rank dies; say so instead of vanishing.
        signal(SIGTERM, SIG_IGN)
        let rank = group.rank
        terminationWatch = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        terminationWatch.setEventHandler {
            Terminal.stderr("rank \(rank): the MPI job is being stopped (SIGTERM), because mpirun was stopped or another rank failed; nothing is written\n")
            _exit(143)
        }
        terminationWatch.resume()
    }

    /// Waits for every rank, then ends MPI.
    func finish() { finishGroup() }

    /// Prints `message` with this rank's number and ends every rank of the job.
    func abort(_ message: String) -> Never {
        Terminal.stderr("rank \(rank) of \(size): error: \(message)\n")
        abortGroup(1)
    }
}

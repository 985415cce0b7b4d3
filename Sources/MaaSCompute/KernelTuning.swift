import Glibc
import MaaSCore
import Synchronization

/// A kernel with several implementations of the same result (OpenBLAS tiled by rows or by
/// columns; direct, im2col + panels or im2col + OpenBLAS convolution). Which one is fastest
/// depends on the CPU, the OpenBLAS build and the shapes, so a plan times them once on its own
/// shapes and buffers instead of guessing. (A constant matrix is packed in one layout only, so its
/// GEMM has nothing to time against our panel kernels: see ``PackedMatrix``.)
protocol Tunable: Kernel {
    /// The implementations that apply to these shapes, the usual default first.
    func implementations(_ inputs: [TensorView?], _ outputs: [TensorView]) -> [String]
    /// This kernel, always running `implementation` (one of ``implementations(_:_:)``).
    func using(_ implementation: String) -> any Kernel
    /// The environment variable that forces an implementation (e.g. `MAAS_KERNEL=blas-rows`, or a
    /// list by preference).
    static var forcingVariable: String { get }
}

/// What a plan chose for one node, and what each implementation took.
public struct KernelChoice: Sendable, CustomStringConvertible {
    public var node: String
    public var shapes: [[Int]]
    public var chosen: String
    /// Best time of each implementation tried, or empty when the choice was forced or the only one.
    public var timings: [(implementation: String, seconds: Double)]
    public var reason: String

    public var description: String {
        let times = timings.map { "\($0.implementation) \(Int(($0.seconds * 1e6).rounded())) µs" }.joined(separator: ", ")
        return "\(node) \(shapes.map { "\($0)" }.joined(separator: " x ")): \(chosen) (\(reason)\(times.isEmpty ? "" : ": " + times))"
    }
}

/// Times each implementation of a ``Tunable`` kernel on a plan's buffers and keeps the fastest.
/// Decisions are remembered per node and shapes (bounded), so a plan rebuilt after eviction
/// does not time again, with the first dimension of the first input (the batch, or a GEMM's
/// rows) rounded up to a power of two: a server's batcher forms every size up to its maximum,
/// and timing each one (~50 ms for the wide MLP) took most of a five-second benchmark.
final class KernelTuner: Sendable {
    private let decisions = Mutex<[Key: KernelChoice]>([:])
    static let maxDecisions = 256

    struct Key: Hashable {
        var step: Int
        var shapes: [[Int]]
    }

    /// Each candidate runs once to warm up, then up to `runs` times (at least 2, more while within
    /// `budget`), and keeps its fastest run: the one least disturbed by other work.
    static let runs = 7
    static let budget = Duration.milliseconds(15)

    func choose(
        step: Int, kernel: any Tunable, label: String, shapes: [[Int]], inputs: [TensorView?], outputs: [TensorView], pool: ComputePool
    ) throws(InferenceError) -> (any Kernel, KernelChoice) {
        var bucketed = shapes
        if let rows = bucketed.first?.first, rows > 1 { bucketed[0][0] = 1 << (Int.bitWidth - (rows - 1).leadingZeroBitCount) }
        let key = Key(step: step, shapes: bucketed)
        if let known = decisions.withLock({ $0[key] }) { return (kernel.using(known.chosen), known) }
        let candidates = kernel.implementations(inputs, outputs)
        var choice = KernelChoice(node: label, shapes: shapes, chosen: candidates.first ?? "default", timings: [], reason: "only one applies")
        // The variable lists implementations by preference (`MAAS_CONV=direct,im2col`): the first
        // that applies runs; if none does, timing decides.
        let variable = type(of: kernel).forcingVariable
        let preferences = getenv(variable).map { String(cString: $0).split(separator: ",").map(String.init) } ?? []
        if let forced = preferences.first(where: candidates.contains) {
            choice.chosen = forced
            choice.reason = "forced by \(variable)"
        } else if candidates.count > 1 {
            // One candidate at a time, each after a warm-up run of its own: they read different
            // copies of the weights, and alternating them (tried) evicted each other's from the
            // cache, timing memory-bound shapes at twice their steady-state cost.
            let variants = candidates.map { kernel.using($0) }
            var best = [Duration](repeating: .seconds(1 << 20), count: variants.count)
            let clock = ContinuousClock()
            for (index, variant) in variants.enumerated() {
                try variant.run(inputs, outputs, pool: pool)
                let start = clock.now
                for run in 0..<Self.runs {
                    let begin = clock.now
                    try variant.run(inputs, outputs, pool: pool)
                    best[index] = min(best[index], clock.now - begin)
                    if run >= 1 && clock.now - start > Self.budget { break }
                }
            }
            choice.timings = zip(candidates, best).map { ($0, $1.inSeconds) }
            choice.chosen = choice.timings.min { $0.seconds < $1.seconds }!.implementation
            choice.reason = "fastest when timed"
        }
        decisions.withLock { decisions in
            if decisions.count >= Self.maxDecisions { decisions.removeAll(keepingCapacity: true) }
            decisions[key] = choice
        }
        return (kernel.using(choice.chosen), choice)
    }
}

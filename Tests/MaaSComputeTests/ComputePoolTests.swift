import Dispatch
import CMaaSKernels
import Glibc
@testable import MaaSCompute
import Synchronization
import Testing

@Suite("Compute pool")
struct ComputePoolTests {
    /// Many outside callers at once, each fanning out: at no moment do more closures compute
    /// than the pool has threads, whether a caller ran inline or handed its work over.
    final class Counters: Sendable {
        let computing = Atomic<Int>(0), most = Atomic<Int>(0), total = Atomic<Int>(0)

        func work() {
            let now = computing.wrappingAdd(1, ordering: .sequentiallyConsistent).newValue
            var seen = most.load(ordering: .relaxed)
            while now > seen, !most.compareExchange(expected: seen, desired: now, ordering: .relaxed).exchanged {
                seen = most.load(ordering: .relaxed)
            }
            for _ in 0..<200 { CMaaSKernels_spin_pause() }
            total.wrappingAdd(1, ordering: .relaxed)
            computing.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    @Test(arguments: [1, 2, 3])
    func neverMoreComputingThreadsThanThePoolHas(threads: Int) {
        let pool = ComputePool(threadCount: threads)
        let counters = Counters()
        // Eight outside threads at once, each fanning out 50 times.
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<50 {
                pool.run { pool.parallelFor(4) { _ in counters.work() } }
            }
        }
        #expect(counters.total.load(ordering: .relaxed) == 8 * 50 * 4)
        #expect(counters.most.load(ordering: .relaxed) <= threads)
    }

    @Test("an outside caller runs its closure itself when a slot is free, on a pool thread otherwise")
    func outsideCallerRunsInline() {
        let pool = ComputePool(threadCount: 2)
        let caller = pthread_self()
        let ranInline = pool.run { pthread_equal(pthread_self(), caller) != 0 && ComputePool.currentPool === pool }
        #expect(ranInline)
        #expect(ComputePool.currentPool == nil, "the caller is not left marked as a pool thread")
    }
}

import CMaaSKernels
import Dispatch
import Glibc
import Synchronization

/// The one pool of compute threads: as many as the machine has cores, shared by every model.
///
/// Work enters with ``run(_:)``, which executes a closure and waits for it; inside,
/// ``parallelFor(_:_:)`` fans chunks out to the pool threads and the calling thread takes its
/// share. No more threads compute at once than the pool has threads: each takes one of
/// `threadCount` slots while it computes. A caller from outside the pool that finds a slot free
/// runs its closure itself (handing it to a sleeping worker and sleeping until it is done cost
/// two futex wake-ups, ~12 µs per call, measured with maas-bench on a one-op model); otherwise
/// it hands it over and only waits. OpenBLAS is set to one thread (BLAS.swift): it is called per tile from here.
public final class ComputePool: Sendable {
    public let threadCount: Int
    private let queue = Mutex(JobQueue())
    private let wakeup = DispatchSemaphore(value: 0)
    /// Bumped on every submit; idle workers spin on it briefly before they sleep, because a
    /// futex wake-up costs tens of microseconds, which at batch 1 is as long as a layer.
    private let epoch = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    /// Forward passes in progress. Idle workers spin only while one runs (its parallel sections
    /// follow each other closely); between passes they sleep at once, leaving the cores to the
    /// event loops (spinning there cost the server 20% of its throughput, measured here).
    private let activeRuns = Atomic<Int>(0)
    /// Slots for computing threads: workers take one per job, inline callers one per run.
    private let freeSlots: Atomic<Int>
    private static let spinIterations = getenvInt("MAAS_SPIN") ?? 5_000

    /// Shared by every model in the process.
    public static let shared = ComputePool(threadCount: ProcessInfoCores.count)

    public init(threadCount: Int) {
        precondition(threadCount > 0)
        self.threadCount = threadCount
        freeSlots = Atomic(threadCount)
        for index in 0..<threadCount {
            let thread = Thread(pool: self, index: index)
            thread.start()
        }
    }

    /// Runs `body` on a pool thread and returns its result.
    /// `body` runs on another thread while this call waits, so it need not be Sendable: whatever it
    /// captures is not touched by the caller until it returns.
    public func run<Value, Failure: Error>(_ body: () throws(Failure) -> Value) throws(Failure) -> Value {
        if ComputePool.currentPool === self { return try body() }
        if ComputePool.currentPool == nil, acquireSlot() {
            ComputePool.setCurrent(self)
            activeRuns.wrappingAdd(1, ordering: .relaxed)
            defer {
                activeRuns.wrappingSubtract(1, ordering: .relaxed)
                ComputePool.setCurrent(nil)
                releaseSlot()
                // A worker may have found work and no slot: let it look again.
                epoch.wrappingAdd(1, ordering: .sequentiallyConsistent)
                if sleepers.load(ordering: .sequentiallyConsistent) > 0 && hasQueuedWork { wakeup.signal() }
            }
            return try body()
        }
        let box = ResultBox<Value, Failure>()
        // `body` only runs while this call waits for the job, so it does not really escape.
        withoutActuallyEscaping(body) { body in
            let job = Job(count: 1) { _ in
                self.activeRuns.wrappingAdd(1, ordering: .relaxed)
                defer { self.activeRuns.wrappingSubtract(1, ordering: .relaxed) }
                box.result = Swift.Result { () throws(Failure) in try body() }
            }
            submit(job, wake: 1)
            job.waitUntilDone(spin: false)
        }
        return try box.result!.get()
    }

    /// Runs `body` on a pool thread without waiting: for work that continues on its own (the
    /// batcher runs each batch, and the next, on the pool thread that finished the last).
    public func async(_ body: @escaping @Sendable () -> Void) {
        let job = Job(count: 1) { _ in
            self.activeRuns.wrappingAdd(1, ordering: .relaxed)
            defer { self.activeRuns.wrappingSubtract(1, ordering: .relaxed) }
            body()
        }
        submit(job, wake: 1)
    }

    /// Calls `body(index)` for every index in `0..<count`, spread over the pool. Returns when all
    /// calls have returned. From a pool thread the caller works too; otherwise it waits.
    /// Like ``run(_:)``, `body` is scoped to the call and need not be Sendable; its calls for
    /// different indices must touch disjoint memory.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        guard count > 0 else { return }
        if count == 1 || threadCount == 1 {
            for index in 0..<count { body(index) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let job = Job(count: count, body: body)
            let onPool = ComputePool.currentPool === self
            submit(job, wake: min(count, threadCount) - (onPool ? 1 : 0))
            if onPool { job.work() }
            job.waitUntilDone(spin: onPool)
        }
    }

    private func submit(_ job: Job, wake: Int) {
        queue.withLock { $0.jobs.append(job) }
        epoch.wrappingAdd(1, ordering: .sequentiallyConsistent)
        let sleeping = sleepers.load(ordering: .sequentiallyConsistent)
        for _ in 0..<min(max(wake, 0), sleeping) { wakeup.signal() }
    }

    private func acquireSlot() -> Bool {
        var current = freeSlots.load(ordering: .relaxed)
        while current > 0 {
            let (exchanged, original) = freeSlots.compareExchange(
                expected: current, desired: current - 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    private func releaseSlot() {
        freeSlots.wrappingAdd(1, ordering: .acquiringAndReleasing)
    }

    private var hasQueuedWork: Bool {
        queue.withLock { $0.jobs.contains { $0.hasUnclaimedWork } }
    }

    private static func setCurrent(_ pool: ComputePool?) {
        pthread_setspecific(currentKey, pool.map { Unmanaged.passUnretained($0).toOpaque() })
    }

    /// The next job that still has unclaimed indices, dropping finished ones.
    fileprivate func nextJob() -> Job? {
        queue.withLock { queue in
            while let first = queue.jobs.first {
                if first.hasUnclaimedWork { return first }
                queue.jobs.removeFirst()
            }
            return nil
        }
    }

    fileprivate func workerLoop() {
        while true {
            // Read before looking for work: a job submitted after the look bumps the epoch,
            // so this thread cannot go to sleep on it.
            let seen = epoch.load(ordering: .sequentiallyConsistent)
            while let job = nextJob(), acquireSlot() {
                job.work()
                releaseSlot()
            }
            // Spin only with a slot free to take: otherwise this thread would be one more busy
            // thread than the pool has.
            var spins = 0
            while spins < Self.spinIterations && epoch.load(ordering: .relaxed) == seen
                && activeRuns.load(ordering: .relaxed) > 0 && freeSlots.load(ordering: .relaxed) > 0
            {
                CMaaSKernels_spin_pause()
                spins += 1
            }
            if epoch.load(ordering: .sequentiallyConsistent) != seen { continue }
            sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if epoch.load(ordering: .sequentiallyConsistent) == seen {
                wakeup.wait()
            }
            sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        }
    }

    fileprivate static let currentKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// A per-thread scratch area of at least `floats` elements, valid until the same thread asks
    /// again. Kernels use it for im2col columns so that running allocates nothing once warm.
    static func scratch(floats: Int) -> UnsafeMutablePointer<Float> {
        let bytes = max(floats, 1) * MemoryLayout<Float>.stride
        if let pointer = pthread_getspecific(scratchKey) {
            let area = Unmanaged<ScratchArea>.fromOpaque(pointer).takeUnretainedValue()
            if area.capacity >= bytes { return area.base.assumingMemoryBound(to: Float.self) }
            Unmanaged<ScratchArea>.fromOpaque(pointer).release()
        }
        let area = ScratchArea(capacity: bytes)
        pthread_setspecific(scratchKey, Unmanaged.passRetained(area).toOpaque())
        return area.base.assumingMemoryBound(to: Float.self)
    }

    private static let scratchKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<ScratchArea>.fromOpaque(pointer).release() }
        }
        return key
    }()

    static var currentPool: ComputePool? {
        guard let pointer = pthread_getspecific(currentKey) else { return nil }
        return Unmanaged<ComputePool>.fromOpaque(pointer).takeUnretainedValue()
    }
}

private struct JobQueue {
    var jobs: [Job] = []
}

/// One `parallelFor`: indices are claimed one at a time with an atomic counter.
private final class Job {
    // Only called for claimed indices, all of which finish before waitUntilDone returns; then
    // the submitter clears it, so the closure never outlives its scope (withoutActuallyEscaping
    // checks that) even if a worker still holds the job.
    private var body: ((Int) -> Void)?
    let count: Int
    let next = Atomic<Int>(0)
    let remaining: Atomic<Int>
    let done = DispatchSemaphore(value: 0)

    init(count: Int, body: @escaping (Int) -> Void) {
        self.count = count
        self.body = body
        self.remaining = Atomic(count)
    }

    var hasUnclaimedWork: Bool { next.load(ordering: .relaxed) < count }

    func work() {
        while true {
            let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
            guard index < count else { return }
            body!(index)
            if remaining.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                done.signal()
            }
        }
    }

    /// Pool threads spin briefly before sleeping: the other threads' chunks usually finish within
    /// microseconds, and a futex sleep and wake-up costs tens of them on this kind of machine.
    /// Callers from outside the pool just sleep: spinning there would take a core from the pool.
    func waitUntilDone(spin: Bool) {
        var spins = 0
        while spin && remaining.load(ordering: .acquiring) > 0 && spins < 50_000 {
            CMaaSKernels_spin_pause()
            spins += 1
        }
        if remaining.load(ordering: .acquiring) > 0 { done.wait() }
        body = nil
    }
}

// `body` is only cleared by the submitter after every claimed index has finished (see above).
extension Job: @unchecked Sendable {}

private final class ResultBox<Success, Failure: Error> {
    var result: Result<Success, Failure>?
}

// Written by the one pool thread that runs the job, read by the submitter after the job is done.
extension ResultBox: @unchecked Sendable {}

private final class Thread {
    let pool: ComputePool
    let index: Int

    init(pool: ComputePool, index: Int) {
        self.pool = pool
        self.index = index
    }

    func start() {
        let attributes = UnsafeMutablePointer<pthread_attr_t>.allocate(capacity: 1)
        defer { attributes.deallocate() }
        pthread_attr_init(attributes)
        pthread_attr_setdetachstate(attributes, Int32(PTHREAD_CREATE_DETACHED))
        pthread_attr_setstacksize(attributes, 8 << 20)
        var handle = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let status = pthread_create(&handle, attributes, { context in
            let thread = Unmanaged<Thread>.fromOpaque(context!).takeRetainedValue()
            pthread_setspecific(ComputePool.currentKey, Unmanaged.passUnretained(thread.pool).toOpaque())
            thread.pool.workerLoop()
            return nil
        }, context)
        precondition(status == 0, "pthread_create failed: \(status)")
        pthread_attr_destroy(attributes)
    }
}

enum ProcessInfoCores {
    /// Online cores, or `MAAS_COMPUTE_THREADS` when set (e.g. to match a taskset).
    static var count: Int {
        if let value = getenv("MAAS_COMPUTE_THREADS").flatMap({ Int(String(cString: $0)) }), value > 0 {
            return value
        }
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}

private final class ScratchArea {
    let base: UnsafeMutableRawPointer
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit {
        base.deallocate()
    }
}

// Its properties are immutable; it is handed to the pthread it starts and not used after start().
extension Thread: @unchecked Sendable {}

/// Returns the pages of freed heap memory to the system: after a model load, whose file
/// buffer and protobuf copies glibc otherwise keeps mapped.
public func releaseFreedMemory() {
    CMaaSKernels_release_free_memory()
}

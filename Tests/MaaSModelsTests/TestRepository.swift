import Dispatch
import Foundation
import MaaSCompute
import MaaSCore
import MaaSModels
import Synchronization
import Testing

/// A repository in a fresh temporary directory holding the seed MLP as `seed/1`.
enum TestRepository {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../MaaSComputeTests/Fixtures/onnx").standardized.path

    static func make(
        config: String? = nil, pool: ComputePool = .shared, clock: any BatchingClock = .system
    ) throws -> (ModelRepository, String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("repo-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/seed/1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixtures + "/seed_mlp.torchscript.op17.onnx", toPath: root + "/seed/1/model.onnx")
        if let config { try config.write(toFile: root + "/seed/config.json", atomically: true, encoding: .utf8) }
        return (ModelRepository(path: root, pool: pool, clock: clock), root)
    }

    /// Adds `seed/<version>` as a copy of version 1.
    static func addVersion(_ version: Int, in root: String) throws {
        try FileManager.default.createDirectory(atPath: root + "/seed/\(version)", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: root + "/seed/1/model.onnx", toPath: root + "/seed/\(version)/model.onnx")
    }
}

/// A batching clock that moves only when the test says so; timers that come due fire inside
/// ``advance(by:)``, on the test's thread.
final class ManualClock: BatchingClock {
    private let state = Mutex((now: ContinuousClock.now, timers: [(at: ContinuousClock.Instant, body: @Sendable () -> Void)]()))

    var now: ContinuousClock.Instant { state.withLock { $0.now } }

    func schedule(after delay: Duration, _ body: @escaping @Sendable () -> Void) {
        state.withLock { $0.timers.append((at: $0.now + delay, body: body)) }
    }

    func advance(by duration: Duration) {
        let due = state.withLock { state in
            state.now += duration
            let now = state.now
            defer { state.timers.removeAll { $0.at <= now } }
            return state.timers.filter { $0.at <= now }
        }
        for timer in due { timer.body() }
    }
}

/// Holds the only thread of a one-thread pool, so that whatever is queued behind it (a
/// warm-up pass, a batch) waits until ``open()``: a load or unload stays visibly under way.
final class PoolGate: Sendable {
    private let released = DispatchSemaphore(value: 0)

    init(closing pool: ComputePool) {
        precondition(pool.threadCount == 1)
        let released = self.released
        pool.async { released.wait() }
    }

    func open() { released.signal() }
}

/// Waits (briefly polling) until `condition` holds: for states reached on other threads.
func eventually(
    _ what: Comment, timeout: Duration = .seconds(20), sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting until \(what)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(1))
    }
}

/// Whether `body` returns within `limit`. A body that never returns (a drain nobody ends)
/// is left behind, so that the test fails instead of hanging the run.
func finishes(within limit: Duration = .seconds(20), _ body: @escaping @Sendable () async -> Void) async -> Bool {
    let (outcomes, report) = AsyncStream<Bool>.makeStream()
    Task {
        await body()
        report.yield(true)
    }
    Task {
        try? await Task.sleep(for: limit)
        report.yield(false)
    }
    for await finished in outcomes { return finished }
    return false
}

/// Collects the answers of batched requests by key: output shapes, or the error.
final class Answers: Sendable {
    private let results = Mutex<[Int: Result<[Int], InferenceError>]>([:])

    func record(_ key: Int, _ result: Result<[String: Tensor], InferenceError>) {
        let shape = result.map { $0["output"]?.shape ?? [] }
        results.withLock { $0[key] = shape }
    }

    var all: [Int: Result<[Int], InferenceError>] { results.withLock { $0 } }
}

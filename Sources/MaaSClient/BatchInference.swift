public import MaaSCore

/// Batch inference of a large input through a server: the rows are split into requests of
/// `batchSize` rows, up to `concurrency` of them in flight at once, and the answers are handed
/// on in row order.
///
/// The runner knows no transport: `send` makes one request (gRPC ModelInfer or KServe REST).
/// A failed request is sent once more; a second failure stops the run with a ``Failure``
/// naming the rows. Cancelling the calling task stops the run with `CancellationError`.
///
/// ```swift
/// let runner = BatchInference(inputs: [("input", x)], batchSize: 64, concurrency: 4) { inputs in
///     try await client.infer(model: "seed", inputs: inputs)
/// }
/// let summary = try await runner.run(deliver: { try files.append($0.outputs) }, progress: { _ in })
/// ```
public struct BatchInference: Sendable {
    public typealias Send = @Sendable (_ inputs: [(name: String, tensor: Tensor)]) async throws -> InferenceResponse

    /// Where a run stands.
    public struct Progress: Sendable {
        public var rowsDone: Int, totalRows: Int
        public var elapsed: Duration
    }

    /// What a run did (also when it stopped early: the counts so far).
    public struct Summary: Sendable {
        public var rows: Int, requests: Int
        public var elapsed: Duration
        /// Per successful request, in completion order.
        public var latencies: [Duration]
        /// Requests that failed once and succeeded when sent again.
        public var retried: Int
        /// Requests that failed twice (0 or 1: the run stops at the first).
        public var failures: Int

        /// The `fraction` quantile of the request latencies (nearest rank), nil with none.
        public func latency(quantile fraction: Double) -> Duration? {
            guard !latencies.isEmpty else { return nil }
            let sorted = latencies.sorted()
            let rank = Int((fraction * Double(sorted.count)).rounded(.up))
            return sorted[min(max(rank, 1), sorted.count) - 1]
        }
    }

    /// A request that failed twice: its rows and the server's (or the connection's) message.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var rows: Range<Int>
        public var message: String
        public var summary: Summary

        public var description: String {
            "rows \(rows.lowerBound)-\(rows.upperBound - 1) failed twice: \(message)"
        }
    }

    public let inputs: [(name: String, tensor: Tensor)]
    public let rows: Int
    public let batchSize: Int
    public let concurrency: Int
    private let send: Send

    /// - Parameters:
    ///   - inputs: tensors with the same number of rows (axis 0).
    ///   - batchSize: rows per request (>= 1).
    ///   - concurrency: requests in flight (>= 1).
    public init(inputs: [(name: String, tensor: Tensor)], batchSize: Int, concurrency: Int, send: @escaping Send) throws(InferenceError) {
        guard let first = inputs.first else { throw .invalidInput("no inputs given") }
        guard first.tensor.rank >= 1 else { throw .invalidInput("input '\(first.name)' is a scalar: it has no rows") }
        let rows = first.tensor.shape[0]
        for input in inputs where input.tensor.rank < 1 || input.tensor.shape[0] != rows {
            throw .invalidInput("input '\(input.name)' has \(input.tensor.shape.first ?? 0) rows, but '\(first.name)' has \(rows)")
        }
        guard batchSize >= 1, concurrency >= 1 else { throw .invalidInput("batch size and concurrency must be at least 1") }
        self.inputs = inputs
        self.rows = rows
        self.batchSize = batchSize
        self.concurrency = concurrency
        self.send = send
    }

    /// The number of requests the run makes.
    public var requestCount: Int { (rows + batchSize - 1) / batchSize }

    /// Sends every request and hands each response to `deliver`, in row order, on the calling
    /// task. At most `4 × concurrency` answered requests wait for an earlier one.
    public func run(
        deliver: (_ rows: Range<Int>, _ response: InferenceResponse) throws -> Void,
        progress: (Progress) -> Void
    ) async throws -> Summary {
        let start = ContinuousClock.now
        var summary = Summary(rows: 0, requests: 0, elapsed: .zero, latencies: [], retried: 0, failures: 0)
        let count = requestCount
        let window = 4 * concurrency
        return try await withThrowingTaskGroup(of: Answer.self) { group in
            var next = 0, delivered = 0, inFlight = 0
            var waiting: [Int: Answer] = [:]
            func launch() {
                let index = next
                next += 1
                inFlight += 1
                group.addTask { try await self.request(index) }
            }
            while next < count && inFlight < concurrency { launch() }
            while inFlight > 0 {
                let answer: Answer
                do {
                    guard let result = try await group.next() else { break }
                    answer = result
                } catch var failure as Failure {
                    summary.failures += 1
                    summary.elapsed = ContinuousClock.now - start
                    failure.summary = summary
                    throw failure
                }
                inFlight -= 1
                summary.requests += 1
                summary.latencies.append(answer.latency)
                if answer.retried { summary.retried += 1 }
                waiting[answer.index] = answer
                while let ready = waiting.removeValue(forKey: delivered) {
                    try deliver(range(ready.index), ready.response)
                    summary.rows += range(ready.index).count
                    delivered += 1
                }
                progress(Progress(rowsDone: summary.rows, totalRows: rows, elapsed: ContinuousClock.now - start))
                while next < count && inFlight < concurrency && next - delivered < window { launch() }
            }
            try Task.checkCancellation()
            summary.elapsed = ContinuousClock.now - start
            return summary
        }
    }

    private struct Answer: Sendable {
        var index: Int
        var response: InferenceResponse
        var latency: Duration
        var retried: Bool
    }

    private func range(_ index: Int) -> Range<Int> {
        index * batchSize..<min(rows, (index + 1) * batchSize)
    }

    /// One request, sent again once if it fails.
    private func request(_ index: Int) async throws -> Answer {
        let rows = range(index)
        let slices = try inputs.map { input throws(InferenceError) in (input.name, try Self.rows(rows, of: input.tensor)) }
        var firstError: (any Error)?
        for attempt in 0..<2 {
            try Task.checkCancellation()
            let start = ContinuousClock.now
            do {
                let response = try await send(slices)
                return Answer(index: index, response: response, latency: ContinuousClock.now - start, retried: attempt > 0)
            } catch {
                try Task.checkCancellation()
                firstError = firstError ?? error
                if attempt == 1 {
                    let summary = Summary(rows: 0, requests: 0, elapsed: .zero, latencies: [], retried: 0, failures: 0)
                    let first = "\(firstError!)", second = "\(error)"
                    throw Failure(rows: rows, message: first == second ? second : "\(second) (first attempt: \(first))", summary: summary)
                }
            }
        }
        fatalError("unreachable: the loop returns or throws")
    }

    /// Rows `range` of `tensor` (axis 0), copied.
    public static func rows(_ range: Range<Int>, of tensor: Tensor) throws(InferenceError) -> Tensor {
        if range.lowerBound == 0 && range.count == tensor.shape[0] { return tensor }
        let rowBytes = tensor.shape[0] == 0 ? 0 : tensor.byteCount / tensor.shape[0]
        return try tensor.withUnsafeBytes { bytes throws(InferenceError) in
            try Tensor(
                dataType: tensor.dataType, shape: [range.count] + tensor.shape.dropFirst(),
                bytes: UnsafeRawBufferPointer(rebasing: bytes[range.lowerBound * rowBytes..<range.upperBound * rowBytes]))
        }
    }
}

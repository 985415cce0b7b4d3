public import MaaSCore
public import MaaSModels
public import MaaSProto
import Synchronization

/// What every frontend (gRPC now, HTTP next) calls, as Triton's core sits under its frontends:
/// model lookup, request checking, batching, statistics and model control, over Swift values.
/// Frontends only translate their wire format to these calls and ``InferenceError``s to their
/// status codes.
public struct InferenceCore: Sendable {
    public let repository: ModelRepository
    public let readiness: Readiness
    /// RepositoryModelLoad/Unload are allowed (Triton's `--model-control-mode explicit`).
    public let explicitControl: Bool

    /// Whether the initial models have been loaded (ServerReady).
    public final class Readiness: Sendable {
        private let ready = Atomic<Bool>(false)
        public init() {}
        public var isReady: Bool { ready.load(ordering: .acquiring) }
        public func markReady() { ready.store(true, ordering: .releasing) }
    }

    public static let serverName = "maas"
    public static let serverVersion = "0.1.0"
    /// The KServe/Triton extensions this server implements.
    public static let extensions = ["model_repository", "model_repository(unload_dependents)", "statistics"]

    public init(repository: ModelRepository, readiness: Readiness, explicitControl: Bool) {
        self.repository = repository
        self.readiness = readiness
        self.explicitControl = explicitControl
    }

    public func model(_ name: String, _ version: String) throws(InferenceError) -> ModelVersion {
        try repository.version(name, version)
    }

    public func isModelReady(_ name: String, _ version: String) -> Bool {
        (try? repository.version(name, version)) != nil
    }

    /// ModelMetadata: the model's loaded versions and the inputs and outputs clients send and get.
    public func metadata(_ name: String, _ version: String) throws(InferenceError) -> (model: ModelVersion, versions: [String]) {
        let model = try model(name, version)
        return (model, repository.loadedVersions().filter { $0.name == name }.map { String($0.version) })
    }

    /// Statistics of every loaded version, of one model's, or of one version's.
    public func statistics(_ name: String, _ version: String) throws(InferenceError) -> [KServe.Statistics] {
        var models = repository.loadedVersions()
        if !name.isEmpty {
            models = models.filter { $0.name == name }
            if models.isEmpty { _ = try model(name, version) }
            if !version.isEmpty {
                models = models.filter { String($0.version) == version }
                if models.isEmpty { _ = try model(name, version) }
            }
        }
        return models.map { model in
            let s = model.batcher.statistics.snapshot
            func d(_ value: ModelStatistics.Duration) -> KServe.Statistics.Duration {
                KServe.Statistics.Duration(count: value.count, nanoseconds: value.nanoseconds)
            }
            return KServe.Statistics(
                name: model.name, version: String(model.version), lastInference: s.lastInference / 1_000_000,
                inferenceCount: s.inferenceCount, executionCount: s.executionCount,
                success: d(s.success), fail: d(s.fail), queue: d(s.queue),
                computeInput: d(s.computeInput), computeInfer: d(s.computeInfer), computeOutput: d(s.computeOutput),
                batches: s.batches.keys.sorted().map { (UInt64($0), d(s.batches[$0]!)) })
        }
    }

    /// RepositoryIndex: every model the repository knows, with its state.
    public func index(readyOnly: Bool) -> [KServe.ModelIndexEntry] {
        repository.index().filter { !readyOnly || $0.state == .ready }.map {
            KServe.ModelIndexEntry(name: $0.name, version: $0.version, state: $0.state.rawValue, reason: $0.reason)
        }
    }

    /// Why a RepositoryModelLoad/Unload is refused before any work (not explicit mode, no
    /// name); nil when it may go on. Frontends answer these at once, without an async hop.
    public func controlRefusal(load: Bool, model: String) -> InferenceError? {
        guard explicitControl else {
            return InferenceError(.failedPrecondition, "explicit model \(load ? "load" : "unload") is only allowed with --model-control-mode explicit")
        }
        guard !model.isEmpty else { return InferenceError(.invalidArgument, "model_name is empty") }
        return nil
    }

    /// RepositoryModelLoad/Unload, explicit mode only. Compiling runs off the caller's thread.
    public func control(load: Bool, model: String) async throws(InferenceError) {
        if let refusal = controlRefusal(load: load, model: model) { throw refusal }
        if load {
            do throws(InferenceError) {
                try await repository.load(model)
            } catch {
                throw InferenceError(error.code == .notFound ? .notFound : .invalidArgument, "failed to load '\(model)': \(error.message)")
            }
        } else {
            await repository.unload(model)
        }
    }

    /// One inference request to submit: the request, when its caller stops waiting, and where
    /// the response (or the error naming the problem) goes.
    public struct Call: Sendable {
        public var request: InferenceRequest
        public var deadline: ContinuousClock.Instant?
        public var cancellation: CancellationSignal?
        public var respond: @Sendable (Result<InferenceResponse, InferenceError>) -> Void
        /// The access log's notes of the request this call serves (nil when the log is off).
        public var notes: RequestNotes?

        public init(
            request: InferenceRequest, deadline: ContinuousClock.Instant?, cancellation: CancellationSignal?,
            notes: RequestNotes? = nil,
            respond: @escaping @Sendable (Result<InferenceResponse, InferenceError>) -> Void
        ) {
            self.request = request
            self.notes = notes
            self.deadline = deadline
            self.cancellation = cancellation
            self.respond = respond
        }
    }

    /// Checks each call against its model (a bad one is answered at once, alone) and hands the
    /// rest to their models' batchers: one hop per model for the whole set, so a frontend passes
    /// everything one read cycle decoded.
    public func infer(_ calls: [Call]) {
        infer(calls, replacing: nil)
    }

    /// `replacing`: the calls found a version that was replaced (or unloaded) before they reached
    /// its queue; they go to whatever serves the model now, once. Nothing is lost in a rolling
    /// update that way, and a version that is only unloading answers UNAVAILABLE as before.
    private func infer(_ calls: [Call], replacing stale: ModelVersion?) {
        var batches: [ObjectIdentifier: (model: ModelVersion, items: [BatchItem], calls: [Call])] = [:]
        for call in calls {
            // The name asked for is logged even when no such model exists; the version that
            // serves it replaces the one asked for (often none) once it is found.
            call.notes?.model(call.request.modelName, version: call.request.modelVersion)
            do throws(InferenceError) {
                let model = try model(call.request.modelName, call.request.modelVersion)
                if let stale, model === stale {
                    throw InferenceError(.unavailable, "model '\(model.name):\(model.version)' is unloading and takes no new requests")
                }
                call.notes?.model(model.name, version: String(model.version))
                let prepared: ModelVersion.Prepared
                do throws(InferenceError) {
                    prepared = try model.prepare(call.request)
                } catch {
                    // A request the model cannot take counts as failed (reason OTHER), as in Triton.
                    model.batcher.statistics.recordRefused(.other)
                    throw error
                }
                let id = call.request.id
                let order = prepared.outputs.isEmpty ? model.outputNames : prepared.outputs
                let respond = call.respond
                let item = BatchItem(
                    inputs: prepared.inputs, rows: prepared.rows, outputs: prepared.outputs, deadline: call.deadline,
                    cancellation: call.cancellation, queueTimeout: Self.queueTimeout(call.request), finish: prepared.finish,
                    notes: call.notes
                ) { result in
                    respond(result.map { outputs in
                        InferenceResponse(
                            modelName: model.name, modelVersion: String(model.version), id: id,
                            outputs: order.compactMap { key in outputs[key].map { (key, $0) } })
                    })
                }
                batches[ObjectIdentifier(model), default: (model, [], [])].items.append(item)
                if stale == nil { batches[ObjectIdentifier(model)]!.calls.append(call) }
            } catch {
                call.respond(.failure(error))
            }
        }
        for (model, items, calls) in batches.values {
            let returned = model.batcher.submit(items, returningIfStopped: stale == nil)
            if !returned.isEmpty { infer(returned.map { calls[$0] }, replacing: model) }
        }
    }

    /// The request's `timeout` parameter (microseconds in the queue), as Triton reads it.
    static func queueTimeout(_ request: InferenceRequest) -> Duration? {
        switch request.parameters["timeout"] {
        case .int64(let micros)? where micros > 0: .microseconds(micros)
        case .uint64(let micros)? where micros > 0: .microseconds(Int64(clamping: micros))
        default: nil
        }
    }
}

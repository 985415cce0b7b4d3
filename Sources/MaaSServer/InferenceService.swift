import MaaSCore
public import MaaSGRPC
public import MaaSModels
import MaaSProto
import NIOCore
import Synchronization

/// Counts a stream's requests in flight, so it ends after the last response once the client
/// has stopped sending.
final class StreamTracker: Sendable {
    private let state = Mutex((inFlight: 0, ended: false))

    func started() { state.withLock { $0.inFlight += 1 } }

    /// Returns true when this completion was the last one after the client's end.
    func finished() -> Bool {
        state.withLock { state in
            state.inFlight -= 1
            return state.ended && state.inFlight == 0
        }
    }

    /// Returns true when nothing is in flight at the client's end.
    func ended() -> Bool {
        state.withLock { state in
            state.ended = true
            return state.inFlight == 0
        }
    }
}

/// `inference.GRPCInferenceService` (KServe v2 / Triton) over a model repository.
public struct InferenceService: RPCService {
    public let repository: ModelRepository
    let readiness: Readiness
    let explicitControl: Bool

    /// How models get loaded, as Triton's `--model-control-mode`.
    public enum ControlMode: String, Sendable, CaseIterable {
        /// Everything in the repository at start; no changes after.
        case none
        /// Everything at start, then the repository is re-read periodically.
        case poll
        /// Only what `--load-model` and RepositoryModelLoad/Unload ask for.
        case explicit
    }

    /// Whether the initial models have been loaded (ServerReady).
    public final class Readiness: Sendable {
        private let ready = Atomic<Bool>(false)
        public init() {}
        public var isReady: Bool { ready.load(ordering: .acquiring) }
        public func markReady() { ready.store(true, ordering: .releasing) }
    }

    public static let serverName = "maas"
    public static let serverVersion = "0.1.0"

    public init(repository: ModelRepository, readiness: Readiness, controlMode: ControlMode = .none) {
        self.repository = repository
        self.readiness = readiness
        self.explicitControl = controlMode == .explicit
    }

    public var serviceName: String { "inference.GRPCInferenceService" }

    public var methods: [String: MethodHandler] {
        let repository = self.repository
        let readiness = self.readiness
        return [
            "ServerLive": Self.simple("ServerLiveRequest") { _ throws(RPCError) in KServe.encodeFlag(true) },
            "ServerReady": Self.simple("ServerReadyRequest") { _ throws(RPCError) in KServe.encodeFlag(readiness.isReady) },
            "ServerMetadata": Self.simple("ServerMetadataRequest") { _ throws(RPCError) in
                KServe.encodeServerMetadata(name: Self.serverName, version: Self.serverVersion, extensions: Self.extensions)
            },
            "ModelReady": .unary { calls in
                for call in calls {
                    call.responder.complete { () throws(RPCError) in
                        let (name, version) = try Self.nameVersion(call.request, "ModelReadyRequest")
                        let ready = (try? repository.version(name, version)) != nil
                        return ByteBuffer(bytes: KServe.encodeFlag(ready))
                    }
                }
            },
            "ModelMetadata": .unary { calls in
                for call in calls {
                    call.responder.complete { () throws(RPCError) in
                        let (name, version) = try Self.nameVersion(call.request, "ModelMetadataRequest")
                        let model = try Self.lookup(repository, name, version)
                        let versions = repository.loadedVersions().filter { $0.name == name }.map { String($0.version) }
                        return ByteBuffer(bytes: KServe.encodeModelMetadata(
                            name: name, versions: versions, platform: model.config.platform,
                            inputs: model.inputMetadata, outputs: model.outputMetadata))
                    }
                }
            },
            "ModelConfig": .unary { calls in
                for call in calls {
                    call.responder.complete { () throws(RPCError) in
                        let (name, version) = try Self.nameVersion(call.request, "ModelConfigRequest")
                        return ByteBuffer(bytes: KServe.encodeModelConfig(try Self.lookup(repository, name, version).config))
                    }
                }
            },
            "ModelInfer": .unary { calls in
                Self.infer(calls, repository: repository)
            },
            "ModelStreamInfer": .streaming { stream in
                Self.streamInfer(stream, repository: repository)
            },
            "ModelStatistics": .unary { calls in
                for call in calls {
                    call.responder.complete { () throws(RPCError) in
                        let (name, version) = try Self.nameVersion(call.request, "ModelStatisticsRequest")
                        return ByteBuffer(bytes: KServe.encodeStatistics(try Self.statistics(repository, name, version)))
                    }
                }
            },
            "RepositoryIndex": .unary { calls in
                for call in calls {
                    call.responder.complete { () throws(RPCError) in
                        let readyOnly: Bool
                        do {
                            readyOnly = try call.request.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                                try KServe.decodeIndexRequest(bytes).readyOnly
                            }
                        } catch {
                            throw RPCError(.internal, "\(error)")
                        }
                        let entries = repository.index().filter { !readyOnly || $0.state == .ready }.map {
                            KServe.ModelIndexEntry(name: $0.name, version: $0.version, state: $0.state.rawValue, reason: $0.reason)
                        }
                        return ByteBuffer(bytes: KServe.encodeIndex(entries))
                    }
                }
            },
            "RepositoryModelLoad": Self.modelControl(load: true, repository: repository, allowed: explicitControl),
            "RepositoryModelUnload": Self.modelControl(load: false, repository: repository, allowed: explicitControl),
        ]
    }

    /// The KServe/Triton extensions this server implements.
    static let extensions = ["model_repository", "model_repository(unload_dependents)", "statistics"]

    /// Load and unload compile or release models: they run off the event loop.
    static func modelControl(load: Bool, repository: ModelRepository, allowed: Bool) -> MethodHandler {
        .asyncUnary { request, _ in
            let model: String
            do {
                model = try request.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                    try KServe.decodeModelControl(bytes, load: load).model
                }
            } catch {
                throw RPCError(.internal, "\(error)")
            }
            guard allowed else {
                throw RPCError(.failedPrecondition, "explicit model \(load ? "load" : "unload") is only allowed with --model-control-mode explicit")
            }
            guard !model.isEmpty else { throw RPCError(.invalidArgument, "model_name is empty") }
            if load {
                do throws(InferenceError) {
                    try await repository.load(model)
                } catch {
                    throw RPCError(error.code == .notFound ? .notFound : .invalidArgument, "failed to load '\(model)': \(error.message)")
                }
            } else {
                await repository.unload(model)
            }
            return ByteBuffer(bytes: KServe.emptyResponse)
        }
    }

    static func statistics(_ repository: ModelRepository, _ name: String, _ version: String) throws(RPCError) -> [KServe.Statistics] {
        var models = repository.loadedVersions()
        if !name.isEmpty {
            models = models.filter { $0.name == name }
            if models.isEmpty { _ = try lookup(repository, name, version) }
            if !version.isEmpty {
                models = models.filter { String($0.version) == version }
                if models.isEmpty { _ = try lookup(repository, name, version) }
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

    /// ModelStreamInfer: each request goes through the batcher on its own; responses come back
    /// in completion order, errors as `error_message` without ending the stream (as Triton does).
    static func streamInfer(_ stream: ServerStream, repository: ModelRepository) {
        let sender = stream.sender
        let tracker = StreamTracker()
        let context = stream.context!
        stream.onMessage = { message in
            do throws(RPCError) {
                let infer = try PreparedInfer(message, repository: repository)
                tracker.started()
                infer.model.batcher.submit([BatchItem(
                    inputs: infer.inputs, rows: infer.rows, outputs: infer.requestedOutputs, deadline: nil,
                    cancellation: context.cancellation, queueTimeout: infer.queueTimeout, finish: infer.finish
                ) { result in
                    switch result {
                    case .success(let outputs):
                        sender.send(ByteBuffer(bytes: infer.response(outputs).streamSerializedBytes()))
                    case .failure(let error):
                        sender.send(ByteBuffer(bytes: KServe.encodeStreamError(error.message)))
                    }
                    if tracker.finished() { sender.finish() }
                }])
            } catch {
                sender.send(ByteBuffer(bytes: KServe.encodeStreamError(error.message)))
            }
        }
        stream.onEnd = {
            if tracker.ended() { sender.finish() }
        }
    }

    /// Decodes each call, checks it against its model and hands all the calls of one read cycle
    /// to their models' batchers: one hop per model per cycle.
    static func infer(_ calls: [UnaryCall], repository: ModelRepository) {
        var batches: [ObjectIdentifier: (ModelVersion, [BatchItem])] = [:]
        for call in calls {
            do throws(RPCError) {
                let infer = try PreparedInfer(call.request, repository: repository)
                let responder = call.responder
                let item = BatchItem(
                    inputs: infer.inputs, rows: infer.rows, outputs: infer.requestedOutputs,
                    deadline: call.context.deadline.map { deadline in
                        .now + .nanoseconds((deadline - NIODeadline.now()).nanoseconds)
                    },
                    cancellation: call.context.cancellation, queueTimeout: infer.queueTimeout, finish: infer.finish
                ) { result in
                    switch result {
                    case .success(let outputs):
                        responder.succeed(infer.response(outputs).withSerializedBytes { ByteBuffer(bytes: $0) })
                    case .failure(let error):
                        responder.fail(RPCError(error.code == .ok ? .internal : error.code, error.message))
                    }
                }
                let model = infer.model
                batches[ObjectIdentifier(model), default: (model, [])].1.append(item)
            } catch {
                call.responder.fail(error)
            }
        }
        for (model, items) in batches.values {
            model.batcher.submit(items)
        }
    }

    static func lookup(_ repository: ModelRepository, _ name: String, _ version: String) throws(RPCError) -> ModelVersion {
        do {
            return try repository.version(name, version)
        } catch {
            throw RPCError(error.code, error.message)
        }
    }

    static func nameVersion(_ buffer: ByteBuffer, _ message: String) throws(RPCError) -> (String, String) {
        do {
            return try buffer.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                try KServe.decodeNameVersion(bytes, message: message)
            }
        } catch {
            throw RPCError(.internal, "\(error)")
        }
    }

    /// A unary method whose empty request is checked and whose answer is computed on the loop.
    static func simple(_ message: String, _ answer: @escaping @Sendable (ByteBuffer) throws(RPCError) -> [UInt8]) -> MethodHandler {
        .unary { calls in
            for call in calls {
                call.responder.complete { () throws(RPCError) in
                    do {
                        try call.request.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                            try KServe.decodeEmpty(bytes, message: message)
                        }
                    } catch {
                        throw RPCError(.internal, "\(error)")
                    }
                    return ByteBuffer(bytes: try answer(call.request))
                }
            }
        }
    }
}

/// A ModelInfer request decoded and checked against its model, ready for the batcher.
struct PreparedInfer: Sendable {
    let model: ModelVersion
    let id: String
    let inputs: [String: Tensor]
    let rows: Int
    let requestedOutputs: [String]
    let finish: (@Sendable ([String: Tensor]) throws(InferenceError) -> [String: Tensor])?
    /// The request's `timeout` parameter (microseconds in the queue), as Triton reads it.
    let queueTimeout: Duration?

    init(_ message: ByteBuffer, repository: ModelRepository) throws(RPCError) {
        let request: InferenceRequest
        do {
            request = try message.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                try InferenceRequest(serializedBytes: bytes)
            }
        } catch {
            throw RPCError(.internal, "\(error)")
        }
        model = try InferenceService.lookup(repository, request.modelName, request.modelVersion)
        do throws(InferenceError) {
            let prepared = try model.prepare(request)
            (inputs, rows, requestedOutputs, finish) = (prepared.inputs, prepared.rows, prepared.outputs, prepared.finish)
        } catch {
            throw RPCError(error.code, error.message)
        }
        id = request.id
        switch request.parameters["timeout"] {
        case .int64(let micros)? where micros > 0: queueTimeout = .microseconds(micros)
        case .uint64(let micros)? where micros > 0: queueTimeout = .microseconds(Int64(clamping: micros))
        default: queueTimeout = nil
        }
    }

    /// The response for this request, outputs in the order asked for (or the model's order).
    func response(_ outputs: [String: Tensor]) -> InferenceResponse {
        let order = requestedOutputs.isEmpty ? model.outputNames : requestedOutputs
        return InferenceResponse(
            modelName: model.name, modelVersion: String(model.version), id: id,
            outputs: order.compactMap { key in outputs[key].map { (key, $0) } })
    }
}

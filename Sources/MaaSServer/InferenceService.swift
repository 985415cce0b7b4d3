import MaaSCore
public import MaaSGRPC
public import MaaSModels
import MaaSProto
import NIOCore
import Synchronization

/// A ModelStreamInfer call's requests in flight, and when the call may end: once nothing is in
/// flight after the client's half-close (OK), or after the server's shutdown asked it to end
/// (UNAVAILABLE: the client sends anything further to another replica). Each method returns the
/// status to end with, once.
final class StreamTracker: Sendable {
    private struct State {
        var inFlight = 0
        var clientEnded = false
        var draining = false
        var ended = false
    }

    private let state = Mutex(State())

    /// Counts a request in, unless the call is draining (then it is refused, not run).
    func started() -> Bool {
        state.withLock { state in
            guard !state.draining else { return false }
            state.inFlight += 1
            return true
        }
    }

    func finished() -> RPCStatus? {
        state.withLock { state in
            state.inFlight -= 1
            return Self.endIfDue(&state)
        }
    }

    func clientEnded() -> RPCStatus? {
        state.withLock { state in
            state.clientEnded = true
            return Self.endIfDue(&state)
        }
    }

    func drain() -> RPCStatus? {
        state.withLock { state in
            state.draining = true
            return Self.endIfDue(&state)
        }
    }

    private static func endIfDue(_ state: inout State) -> RPCStatus? {
        guard !state.ended, state.inFlight == 0, state.clientEnded || state.draining else { return nil }
        state.ended = true
        return state.clientEnded ? .ok : RPCStatus(code: .unavailable, message: "server is shutting down")
    }
}

/// `inference.GRPCInferenceService` (KServe v2 / Triton): the gRPC frontend of ``InferenceCore``.
/// It decodes protobuf, calls the core and encodes the answer; every error the core names comes
/// back with its own status (``RPCError/init(_:)``).
public struct InferenceService: RPCService {
    public let core: InferenceCore

    /// How models get loaded, as Triton's `--model-control-mode`.
    public enum ControlMode: String, Sendable, CaseIterable {
        /// Everything in the repository at start; no changes after.
        case none
        /// Everything at start, then the repository is re-read periodically.
        case poll
        /// Only what `--load-model` and RepositoryModelLoad/Unload ask for.
        case explicit
    }

    public typealias Readiness = InferenceCore.Readiness

    public init(repository: ModelRepository, readiness: Readiness, controlMode: ControlMode = .none) {
        core = InferenceCore(repository: repository, readiness: readiness, explicitControl: controlMode == .explicit)
    }

    public var serviceName: String { "inference.GRPCInferenceService" }

    public var methods: [String: MethodHandler] {
        let core = self.core
        return [
            "ServerLive": Self.simple("ServerLiveRequest") { KServe.encodeFlag(true) },
            "ServerReady": Self.simple("ServerReadyRequest") { KServe.encodeFlag(core.readiness.isReady) },
            "ServerMetadata": Self.simple("ServerMetadataRequest") {
                KServe.encodeServerMetadata(name: InferenceCore.serverName, version: InferenceCore.serverVersion, extensions: InferenceCore.extensions)
            },
            "ModelReady": Self.unary { request, notes throws(InferenceError) in
                let (name, version) = try Self.nameVersion(request, "ModelReadyRequest", notes)
                return KServe.encodeFlag(core.isModelReady(name, version))
            },
            "ModelMetadata": Self.unary { request, notes throws(InferenceError) in
                let (name, version) = try Self.nameVersion(request, "ModelMetadataRequest", notes)
                let (model, versions) = try core.metadata(name, version)
                return KServe.encodeModelMetadata(
                    name: name, versions: versions, platform: model.config.platform,
                    inputs: model.inputMetadata, outputs: model.outputMetadata)
            },
            "ModelConfig": Self.unary { request, notes throws(InferenceError) in
                let (name, version) = try Self.nameVersion(request, "ModelConfigRequest", notes)
                return KServe.encodeModelConfig(try core.model(name, version).config)
            },
            "ModelInfer": .unary { calls in
                Self.infer(calls, core: core)
            },
            "ModelStreamInfer": .streaming { stream in
                Self.streamInfer(stream, core: core)
            },
            "ModelStatistics": Self.unary { request, notes throws(InferenceError) in
                let (name, version) = try Self.nameVersion(request, "ModelStatisticsRequest", notes)
                return KServe.encodeStatistics(try core.statistics(name, version))
            },
            "RepositoryIndex": Self.unary { request, _ throws(InferenceError) in
                let readyOnly = try Self.decode(request) { bytes throws(ProtobufDecodingError) in try KServe.decodeIndexRequest(bytes).readyOnly }
                return KServe.encodeIndex(core.index(readyOnly: readyOnly))
            },
            "RepositoryModelLoad": Self.modelControl(load: true, core: core),
            "RepositoryModelUnload": Self.modelControl(load: false, core: core),
        ]
    }

    /// Load and unload compile or release models: they run off the event loop.
    static func modelControl(load: Bool, core: InferenceCore) -> MethodHandler {
        .asyncUnary { request, context in
            do throws(InferenceError) {
                let model = try decode(request) { bytes throws(ProtobufDecodingError) in try KServe.decodeModelControl(bytes, load: load).model }
                context.notes?.model(model, version: "")
                try await core.control(load: load, model: model)
            } catch {
                throw RPCError(error)
            }
            return ByteBuffer(bytes: KServe.emptyResponse)
        }
    }

    /// ModelStreamInfer: each request goes through the batcher on its own; responses come back
    /// in completion order, errors as `error_message` without ending the stream (as Triton does).
    static func streamInfer(_ stream: ServerStream, core: InferenceCore) {
        let sender = stream.sender
        let tracker = StreamTracker()
        let context = stream.context!
        stream.onMessage = { message in
            do throws(InferenceError) {
                let request = try decode(message) { bytes throws(ProtobufDecodingError) in try InferenceRequest(serializedBytes: bytes) }
                guard tracker.started() else {
                    let which = request.id.isEmpty ? "a request" : "request '\(request.id)'"
                    sender.send(ByteBuffer(bytes: KServe.encodeStreamError(
                        "server is shutting down: \(which) for model '\(request.modelName)' was not run; send it to another replica")))
                    return
                }
                core.infer([InferenceCore.Call(request: request, deadline: nil, cancellation: context.cancellation, notes: context.notes) { result in
                    switch result {
                    case .success(let response):
                        sender.send(ByteBuffer(bytes: response.streamSerializedBytes()))
                    case .failure(let error):
                        sender.send(ByteBuffer(bytes: KServe.encodeStreamError(error.message)))
                    }
                    if let status = tracker.finished() { sender.finish(status) }
                }])
            } catch {
                sender.send(ByteBuffer(bytes: KServe.encodeStreamError(error.message)))
            }
        }
        stream.onEnd = {
            if let status = tracker.clientEnded() { sender.finish(status) }
        }
        stream.onDrain = {
            if let status = tracker.drain() { sender.finish(status) }
        }
    }

    /// Decodes each call and hands all the calls of one read cycle to the core together: one
    /// hop per model per cycle.
    static func infer(_ calls: [UnaryCall], core: InferenceCore) {
        var submitted: [InferenceCore.Call] = []
        submitted.reserveCapacity(calls.count)
        for call in calls {
            do throws(InferenceError) {
                let request = try decode(call.request) { bytes throws(ProtobufDecodingError) in try InferenceRequest(serializedBytes: bytes) }
                let responder = call.responder
                submitted.append(InferenceCore.Call(
                    request: request,
                    deadline: call.context.deadline.map { deadline in .now + .nanoseconds((deadline - NIODeadline.now()).nanoseconds) },
                    cancellation: call.context.cancellation,
                    notes: call.context.notes
                ) { result in
                    switch result {
                    case .success(let response):
                        responder.succeed(response.withSerializedBytes { ByteBuffer(bytes: $0) })
                    case .failure(let error):
                        responder.fail(RPCError(error))
                    }
                })
            } catch {
                call.responder.fail(RPCError(error))
            }
        }
        core.infer(submitted)
    }

    /// A message that does not parse: INTERNAL, as gRPC servers answer a request they cannot
    /// deserialize, with what was being decoded.
    static func decode<T>(_ buffer: ByteBuffer, _ body: (UnsafeRawBufferPointer) throws(ProtobufDecodingError) -> T) throws(InferenceError) -> T {
        do {
            return try buffer.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in try body(bytes) }
        } catch {
            throw InferenceError(.internal, "\(error)")
        }
    }

    /// The request's model name and version, told to the access log when it is on.
    static func nameVersion(_ buffer: ByteBuffer, _ message: String, _ notes: RequestNotes?) throws(InferenceError) -> (String, String) {
        let (name, version) = try decode(buffer) { bytes throws(ProtobufDecodingError) in try KServe.decodeNameVersion(bytes, message: message) }
        notes?.model(name, version: version)
        return (name, version)
    }

    /// A unary method answered on the event loop from the core, given the call's access-log notes.
    static func unary(_ answer: @escaping @Sendable (ByteBuffer, RequestNotes?) throws(InferenceError) -> [UInt8]) -> MethodHandler {
        .unary { calls in
            for call in calls {
                call.responder.complete { () throws(RPCError) in
                    do throws(InferenceError) {
                        return ByteBuffer(bytes: try answer(call.request, call.context.notes))
                    } catch {
                        throw RPCError(error)
                    }
                }
            }
        }
    }

    /// A unary method whose empty request is checked and whose answer is computed on the loop.
    static func simple(_ message: String, _ answer: @escaping @Sendable () -> [UInt8]) -> MethodHandler {
        unary { request, _ throws(InferenceError) in
            try decode(request) { bytes throws(ProtobufDecodingError) in try KServe.decodeEmpty(bytes, message: message) }
            return answer()
        }
    }
}

extension RPCError {
    /// The core's error as a gRPC status: the code it carries, its message unchanged.
    init(_ error: InferenceError) {
        var metadata: Metadata = [:]
        if let retry = error.retryAfter {
            // gRPC's retry pushback: clients with a retry policy wait this long, others see it.
            metadata.add("grpc-retry-pushback-ms", String(max(Int((retry.inSeconds * 1000).rounded(.up)), 1)))
        }
        self.init(error.code == .ok ? .internal : error.code, error.message, metadata: metadata)
    }
}

import MaaSCore
public import MaaSGRPC
public import MaaSModels
import MaaSProto
import NIOCore
import Synchronization

/// `inference.GRPCInferenceService` (KServe v2 / Triton) over a model repository.
public struct InferenceService: RPCService {
    public let repository: ModelRepository
    let readiness: Readiness

    /// Whether the initial models have been loaded (ServerReady).
    public final class Readiness: Sendable {
        private let ready = Atomic<Bool>(false)
        public init() {}
        public var isReady: Bool { ready.load(ordering: .acquiring) }
        public func markReady() { ready.store(true, ordering: .releasing) }
    }

    public static let serverName = "maas"
    public static let serverVersion = "0.1.0"

    public init(repository: ModelRepository, readiness: Readiness) {
        self.repository = repository
        self.readiness = readiness
    }

    public var serviceName: String { "inference.GRPCInferenceService" }

    public var methods: [String: MethodHandler] {
        let repository = self.repository
        let readiness = self.readiness
        return [
            "ServerLive": Self.simple("ServerLiveRequest") { _ throws(RPCError) in KServe.encodeFlag(true) },
            "ServerReady": Self.simple("ServerReadyRequest") { _ throws(RPCError) in KServe.encodeFlag(readiness.isReady) },
            "ServerMetadata": Self.simple("ServerMetadataRequest") { _ throws(RPCError) in
                KServe.encodeServerMetadata(name: Self.serverName, version: Self.serverVersion, extensions: [])
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
        ]
    }

    /// Decodes each call, checks it against its model and hands all the calls of one read cycle
    /// to their models' batchers: one hop per model per cycle.
    static func infer(_ calls: [UnaryCall], repository: ModelRepository) {
        var batches: [ObjectIdentifier: (ModelVersion, [BatchItem])] = [:]
        for call in calls {
            do throws(RPCError) {
                let request: InferenceRequest
                do {
                    request = try call.request.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                        try InferenceRequest(serializedBytes: bytes)
                    }
                } catch {
                    throw RPCError(.internal, "\(error)")
                }
                let model = try lookup(repository, request.modelName, request.modelVersion)
                let prepared: (inputs: [String: Tensor], rows: Int, outputs: [String])
                do {
                    prepared = try model.prepare(request)
                } catch {
                    throw RPCError(error.code, error.message)
                }
                let responder = call.responder
                let (name, version, id) = (model.name, String(model.version), request.id)
                let outputOrder = prepared.outputs.isEmpty ? model.config.outputs.map(\.name) : prepared.outputs
                let item = BatchItem(
                    inputs: prepared.inputs, rows: prepared.rows, outputs: prepared.outputs,
                    deadline: call.context.deadline.map { deadline in
                        .now + .nanoseconds((deadline - NIODeadline.now()).nanoseconds)
                    },
                    cancellation: call.context.cancellation
                ) { result in
                    switch result {
                    case .success(let outputs):
                        let response = InferenceResponse(
                            modelName: name, modelVersion: version, id: id,
                            outputs: outputOrder.compactMap { key in outputs[key].map { (key, $0) } })
                        responder.succeed(ByteBuffer(bytes: response.serializedBytes()))
                    case .failure(let error):
                        responder.fail(RPCError(error.code == .ok ? .internal : error.code, error.message))
                    }
                }
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

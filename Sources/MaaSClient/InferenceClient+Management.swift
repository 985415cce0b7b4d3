public import MaaSCore
public import MaaSGRPC
public import MaaSProto
import NIOCore

/// Metadata, configuration, repository control and statistics: what an operator asks a server.
extension InferenceClient {
    /// ModelMetadata: inputs and outputs with KServe datatypes and shapes (-1 variable).
    public func metadata(model: String, version: String = "", timeout: Duration? = nil) async throws(RPCError) -> KServe.ModelMetadata {
        try await call("ModelMetadata", KServe.encodeNameVersion(name: model, version: version), timeout) { bytes throws(ProtobufDecodingError) in
            try KServe.decodeModelMetadata(bytes)
        }
    }

    /// ModelConfig, as far as ``ModelConfig`` holds it.
    public func config(model: String, version: String = "", timeout: Duration? = nil) async throws(RPCError) -> ModelConfig {
        try await call("ModelConfig", KServe.encodeNameVersion(name: model, version: version), timeout) { bytes throws(ProtobufDecodingError) in
            try KServe.decodeModelConfig(bytes)
        }
    }

    /// RepositoryIndex: every model the repository has (or only the ready ones), with state and reason.
    public func repositoryIndex(readyOnly: Bool = false, timeout: Duration? = nil) async throws(RPCError) -> [KServe.ModelIndexEntry] {
        try await call("RepositoryIndex", KServe.encodeIndexRequest(readyOnly: readyOnly), timeout) { bytes throws(ProtobufDecodingError) in
            try KServe.decodeIndex(bytes)
        }
    }

    /// RepositoryModelLoad (explicit model control mode; FAILED_PRECONDITION otherwise).
    public func load(model: String, timeout: Duration? = nil) async throws(RPCError) {
        try await call("RepositoryModelLoad", KServe.encodeModelControl(model: model, load: true), timeout, idempotent: false) { _ in () }
    }

    /// RepositoryModelUnload (explicit model control mode; FAILED_PRECONDITION otherwise).
    public func unload(model: String, timeout: Duration? = nil) async throws(RPCError) {
        try await call("RepositoryModelUnload", KServe.encodeModelControl(model: model, load: false), timeout, idempotent: false) { _ in () }
    }

    /// ModelStatistics of one model ("" for every model) and version ("" for every version).
    public func statistics(model: String = "", version: String = "", timeout: Duration? = nil) async throws(RPCError) -> [KServe.Statistics] {
        try await call("ModelStatistics", KServe.encodeNameVersion(name: model, version: version), timeout) { bytes throws(ProtobufDecodingError) in
            try KServe.decodeStatistics(bytes)
        }
    }

    private func call<Result>(
        _ method: String, _ request: [UInt8], _ timeout: Duration?, idempotent: Bool = true,
        decode: (UnsafeRawBufferPointer) throws(ProtobufDecodingError) -> Result
    ) async throws(RPCError) -> Result {
        let response = try await caller.unary(
            path: "/inference.GRPCInferenceService/" + method, request: ByteBuffer(bytes: request), metadata: [:], timeout: timeout,
            idempotent: idempotent)
        do {
            return try response.message.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in try decode(bytes) }
        } catch {
            throw RPCError(.internal, "\(method) response: \(error)")
        }
    }
}

public import MaaSCore
public import MaaSGRPC
import MaaSProto
import NIOCore

/// Calls `inference.GRPCInferenceService` (KServe v2 / Triton) on any server that speaks it:
/// service-to-service inference from Swift.
///
/// ```swift
/// let client = try await GRPCClient.connect(host: "127.0.0.1", port: 8001)
/// let inference = InferenceClient(client)
/// let result = try await inference.infer(model: "seed", inputs: [("input", Tensor(values, shape: [2, 10]))])
/// let output = result.output("output")!
/// ```
///
/// With several servers, `InferenceClient(endpoints:)` spreads the calls over them
/// (``BalancedGRPCClient``); inference, metadata and statistics have no side effects, so a call
/// a draining or vanished server could not answer goes to the next one.
public struct InferenceClient: Sendable {
    public let caller: any UnaryCaller
    private static let service = "/inference.GRPCInferenceService/"

    public init(_ caller: any UnaryCaller) {
        self.caller = caller
    }

    /// Round robin over `endpoints`, reconnecting with backoff (``BalancedGRPCClient``).
    public init(endpoints: [GRPCEndpoint], configuration: GRPCClientConfiguration = GRPCClientConfiguration()) {
        self.caller = BalancedGRPCClient(endpoints: endpoints, configuration: configuration)
    }

    /// Runs `model` on `inputs` (sent as raw bytes). Server errors arrive as the server's
    /// status and message (NOT_FOUND for an unknown model, INVALID_ARGUMENT for a bad input...).
    /// - Parameters:
    ///   - version: "" lets the server pick (the latest ready version).
    ///   - outputs: the outputs to return; empty means all of them.
    public func infer(
        model: String, version: String = "", inputs: [(name: String, tensor: Tensor)], outputs: [String] = [], id: String = "",
        timeout: Duration? = nil
    ) async throws(RPCError) -> InferenceResponse {
        let body = KServe.encodeInferRequest(model: model, version: version, id: id, inputs: inputs, outputs: outputs)
        let response = try await caller.unary(
            path: Self.service + "ModelInfer", request: ByteBuffer(bytes: body), metadata: [:], timeout: timeout, idempotent: true)
        do {
            return try response.message.withUnsafeReadableBytes { bytes throws(InferenceError) in
                try InferenceResponse(serializedBytes: bytes)
            }
        } catch {
            throw RPCError(error.code, "ModelInfer response: \(error.message)")
        }
    }

    public func isServerLive(timeout: Duration? = nil) async throws(RPCError) -> Bool {
        try await flag("ServerLive", request: [], timeout: timeout)
    }

    public func isServerReady(timeout: Duration? = nil) async throws(RPCError) -> Bool {
        try await flag("ServerReady", request: [], timeout: timeout)
    }

    public func isModelReady(_ name: String, version: String = "", timeout: Duration? = nil) async throws(RPCError) -> Bool {
        try await flag("ModelReady", request: KServe.encodeNameVersion(name: name, version: version), timeout: timeout)
    }

    private func flag(_ method: String, request: [UInt8], timeout: Duration?) async throws(RPCError) -> Bool {
        let response = try await caller.unary(
            path: Self.service + method, request: ByteBuffer(bytes: request), metadata: [:], timeout: timeout, idempotent: true)
        do {
            return try response.message.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                try KServe.decodeFlag(bytes, message: method + "Response")
            }
        } catch {
            throw RPCError(.internal, "\(error)")
        }
    }
}

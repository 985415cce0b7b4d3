public import MaaSGRPC
public import MaaSProto
import MaaSCore
public import NIOCore

/// Calls `grpc.health.v1.Health` on a server.
public struct HealthClient: Sendable {
    public let client: GRPCClient

    public init(_ client: GRPCClient) {
        self.client = client
    }

    /// The status of `service` ("" for the whole server). Throws NOT_FOUND for an unknown service.
    public func check(service: String = "", timeout: Duration? = nil) async throws(RPCError) -> HealthCheckResponse.ServingStatus {
        let request = ByteBuffer(bytes: HealthCheckRequest(service: service).serializedBytes())
        let response = try await client.unary(path: "/grpc.health.v1.Health/Check", request: request, timeout: timeout)
        return try Self.decode(response.message).status
    }

    /// Every status the server reports for `service`, starting with the current one.
    public func watch(service: String = "") async throws(RPCError) -> AsyncThrowingMapSequence<AsyncThrowingStream<ByteBuffer, any Error>, HealthCheckResponse.ServingStatus> {
        let call = try await client.streaming(path: "/grpc.health.v1.Health/Watch")
        call.send(ByteBuffer(bytes: HealthCheckRequest(service: service).serializedBytes()))
        call.finishSending()
        return call.responses.map { message in try Self.decode(message).status }
    }

    private static func decode(_ message: ByteBuffer) throws(RPCError) -> HealthCheckResponse {
        do {
            return try message.withUnsafeReadableBytes { bytes throws(ProtobufDecodingError) in
                try HealthCheckResponse(serializedBytes: bytes)
            }
        } catch {
            throw RPCError(.internal, "\(error)")
        }
    }
}

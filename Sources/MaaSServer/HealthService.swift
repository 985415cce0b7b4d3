import MaaSCore
public import MaaSGRPC
import MaaSProto
import NIOCore

/// `grpc.health.v1.Health`: Check answers from the provider, Watch streams every change.
public struct HealthService: RPCService {
    public let provider: HealthStatusProvider

    public init(provider: HealthStatusProvider) {
        self.provider = provider
    }

    public var serviceName: String { "grpc.health.v1.Health" }

    public var methods: [String: MethodHandler] {
        let provider = self.provider
        return [
            "Check": .unary { calls in
                for call in calls {
                    call.responder.complete { () throws(RPCError) in try Self.check(call.request, provider: provider) }
                }
            },
            "Watch": .streaming { stream in
                Self.watch(stream, provider: provider)
            },
        ]
    }

    private static func check(_ request: ByteBuffer, provider: HealthStatusProvider) throws(RPCError) -> ByteBuffer {
        let service = try decodeRequest(request).service
        guard let status = provider.status(of: service) else {
            throw RPCError(.notFound, "unknown service '\(service)'")
        }
        return encoded(status)
    }

    /// There are four possible answers: encode them once.
    private static let encodedResponses: [HealthCheckResponse.ServingStatus: ByteBuffer] = Dictionary(
        uniqueKeysWithValues: [.unknown, .serving, .notServing, .serviceUnknown].map {
            ($0, ByteBuffer(bytes: HealthCheckResponse(status: $0).serializedBytes()))
        })

    private static func encoded(_ status: HealthCheckResponse.ServingStatus) -> ByteBuffer {
        encodedResponses[status]!
    }

    private static func watch(_ stream: ServerStream, provider: HealthStatusProvider) {
        var token: HealthStatusProvider.WatchToken?
        stream.onMessage = { [unowned stream] message in
            guard token == nil else {
                stream.fail(RPCError(.internal, "Watch takes exactly one request message"))
                return
            }
            let request: HealthCheckRequest
            do throws(RPCError) {
                request = try decodeRequest(message)
            } catch {
                stream.fail(error)
                return
            }
            let sender = stream.sender
            token = provider.watch(request.service) { status in
                sender.send(encoded(status))
            }
        }
        stream.onCancel = { _ in
            if let token { provider.cancelWatch(token) }
        }
    }

    private static func decodeRequest(_ buffer: ByteBuffer) throws(RPCError) -> HealthCheckRequest {
        do throws(InferenceError) {
            return try InferenceService.decode(buffer) { bytes throws(ProtobufDecodingError) in try HealthCheckRequest(serializedBytes: bytes) }
        } catch {
            throw RPCError(error)
        }
    }
}

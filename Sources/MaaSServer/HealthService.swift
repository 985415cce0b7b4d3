import MaaSCore
public import MaaSGRPC
import MaaSProto
import NIOCore
import Synchronization

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

    static func encoded(_ status: HealthCheckResponse.ServingStatus) -> ByteBuffer {
        encodedResponses[status]!
    }

    private static func watch(_ stream: ServerStream, provider: HealthStatusProvider) {
        let watch = HealthWatch(sender: stream.sender)
        var token: HealthStatusProvider.WatchToken?
        var drained = false
        stream.onMessage = { [unowned stream] message in
            guard token == nil, !drained else {
                if !drained { stream.fail(RPCError(.internal, "Watch takes exactly one request message")) }
                return
            }
            let request: HealthCheckRequest
            do throws(RPCError) {
                request = try decodeRequest(message)
            } catch {
                stream.fail(error)
                return
            }
            token = provider.watch(request.service) { status in watch.update(status) }
        }
        stream.onCancel = { _ in
            if let token { provider.cancelWatch(token) }
        }
        stream.onDrain = {
            drained = true
            if let token { provider.cancelWatch(token) }
            watch.end(sayNotServing: token != nil)
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

/// One Watch call's sends: every status change, then, when the server shuts down, NOT_SERVING
/// (unless that was the last thing said) and the end of the call. One lock orders the provider's
/// notifications (any thread) against the end (the event loop), so nothing follows the end.
private final class HealthWatch: Sendable {
    private let sender: StreamSender
    private let state = Mutex<(last: HealthCheckResponse.ServingStatus?, ended: Bool)>((nil, false))

    init(sender: StreamSender) {
        self.sender = sender
    }

    func update(_ status: HealthCheckResponse.ServingStatus) {
        state.withLock { state in
            guard !state.ended else { return }
            state.last = status
            sender.send(HealthService.encoded(status))
        }
    }

    func end(sayNotServing: Bool) {
        state.withLock { state in
            guard !state.ended else { return }
            state.ended = true
            if sayNotServing, state.last != .notServing { sender.send(HealthService.encoded(.notServing)) }
            sender.fail(RPCError(.unavailable, "server is shutting down"))
        }
    }
}

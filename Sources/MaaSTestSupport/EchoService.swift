import MaaSCore
public import MaaSGRPC
import NIOCore

/// `maas.testing.Echo`: a service for transport tests, with one method per call shape. The
/// Python peer in Tests/interop implements the same contract:
/// - `Unary`: answers the request; request metadata named `x-echo-*` comes back as trailers.
/// - `Slow`: the same after `x-sleep-ms` milliseconds (default 5000); cancellable.
/// - `ServerStream`: answers the request `x-count` times (default 3).
/// - `ClientStream`: answers the concatenation of all requests.
/// - `Bidi`: answers each request as it arrives.
/// - `Fail`: fails with status `x-code` and message `x-message` (or UTF-8 `x-message-bin`).
public struct EchoService: RPCService {
    public init() {}

    public var serviceName: String { "maas.testing.Echo" }

    public var methods: [String: MethodHandler] {
        [
            "Unary": .unary { calls in
                for call in calls {
                    call.responder.succeed(call.request, trailers: Self.echoed(call.context.metadata))
                }
            },
            "Slow": .asyncUnary { request, context in
                let millis = Int(context.metadata["x-sleep-ms"] ?? "") ?? 5000
                try await Task.sleep(for: .milliseconds(millis))
                return request
            },
            "ServerStream": .streaming { stream in
                let count = Int(stream.context.metadata["x-count"] ?? "") ?? 3
                stream.onMessage = { [unowned stream] message in
                    // Fresh buffers, as real handlers produce: memory tests see real allocations.
                    for _ in 0..<count { stream.send(ByteBuffer(bytes: message.readableBytesView)) }
                    stream.finish(.ok, trailers: Self.echoed(stream.context.metadata))
                }
            },
            "ClientStream": .streaming { stream in
                var collected = ByteBuffer()
                stream.onMessage = { message in
                    var message = message
                    collected.writeBuffer(&message)
                }
                stream.onEnd = { [unowned stream] in
                    stream.send(collected)
                    stream.finish()
                }
            },
            "Bidi": .streaming { stream in
                stream.initialMetadata = Self.echoed(stream.context.metadata)
                stream.onMessage = { [unowned stream] message in stream.send(message) }
                stream.onEnd = { [unowned stream] in stream.finish() }
            },
            "Fail": .unary { calls in
                for call in calls {
                    let metadata = call.context.metadata
                    let code = Int32(metadata["x-code"] ?? "").flatMap(StatusCode.init(rawValue:)) ?? .unknown
                    // x-message-bin carries messages that are not ASCII (metadata values must be).
                    let message = metadata.binary("x-message-bin").map { String(decoding: $0, as: UTF8.self) }
                        ?? metadata["x-message"] ?? "failed on request"
                    if code == .ok {
                        call.responder.succeed(call.request)
                    } else {
                        call.responder.fail(RPCError(code, message, metadata: Self.echoed(metadata)))
                    }
                }
            },
        ]
    }

    static func echoed(_ metadata: Metadata) -> Metadata {
        var echoed = Metadata()
        for element in metadata where element.key.hasPrefix("x-echo-") {
            echoed.add(element.key, value: element.value)
        }
        return echoed
    }
}

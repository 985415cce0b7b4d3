import MaaSCore
import MaaSGRPC
import MaaSProto
import MaaSServer
import NIOCore

/// `maas.testing.HealthControl/Set`: request bytes are `SERVICE=STATUS` (status 1 serving, 2 not
/// serving, 0 remove), so interop tests can drive Watch from outside.
struct HealthControlService: RPCService {
    let provider: HealthStatusProvider

    var serviceName: String { "maas.testing.HealthControl" }

    var methods: [String: MethodHandler] {
        let provider = self.provider
        return [
            "Set": .unary { calls in
                for call in calls {
                    let text = String(buffer: call.request)
                    let parts = text.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    guard parts.count == 2, let raw = Int32(parts[1]) else {
                        call.responder.fail(RPCError(.invalidArgument, "expected SERVICE=STATUS, got '\(text)'"))
                        continue
                    }
                    if raw == 0 {
                        provider.removeStatus(for: String(parts[0]))
                    } else if let status = HealthStatusProvider.ServingStatus(rawValue: raw) {
                        provider.setStatus(status, for: String(parts[0]))
                    }
                    call.responder.succeed(ByteBuffer())
                }
            }
        ]
    }
}

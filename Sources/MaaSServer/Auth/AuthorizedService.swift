import MaaSCore
public import MaaSGRPC

/// A gRPC service whose methods are checked against an ``AccessPolicy`` before they run:
/// UNAUTHENTICATED without a known token, PERMISSION_DENIED naming the scope a token lacks.
/// Unary calls are checked one by one and the allowed ones handed on together, as they came;
/// a streaming call is checked when its headers arrive, before any message.
public struct AuthorizedService: RPCService {
    public let serviceName: String
    public let methods: [String: MethodHandler]

    /// - Parameters:
    ///   - requirement: what each method of `service` needs; methods it returns nil for need
    ///     `admin` (a method added later is closed until someone says otherwise).
    public init(_ service: some RPCService, policy: AccessPolicy, requirement: (String) -> AccessRequirement?) {
        serviceName = service.serviceName
        var methods: [String: MethodHandler] = [:]
        for (name, handler) in service.methods {
            methods[name] = Self.guarded(handler, requirement(name) ?? .scope(.admin), policy)
        }
        self.methods = methods
    }

    private static func guarded(_ handler: MethodHandler, _ requirement: AccessRequirement, _ policy: AccessPolicy) -> MethodHandler {
        switch handler {
        case .unary(let handle):
            return .unary { calls in
                // Allocates only when something is refused.
                var allowed: [UnaryCall]?
                for (index, call) in calls.enumerated() {
                    let decision = policy.check(requirement, metadata: call.context.metadata)
                    decision.note(in: call.context.notes)
                    if let refusal = decision.refusal {
                        if allowed == nil { allowed = Array(calls[..<index]) }
                        call.responder.fail(RPCError(refusal.code, refusal.message))
                    } else {
                        allowed?.append(call)
                    }
                }
                let served = allowed ?? calls
                if !served.isEmpty { handle(served) }
            }
        case .streaming(let open):
            return .streaming { stream in
                let decision = policy.check(requirement, metadata: stream.context.metadata)
                decision.note(in: stream.context.notes)
                if let refusal = decision.refusal {
                    stream.fail(RPCError(refusal.code, refusal.message))
                    return
                }
                open(stream)
            }
        }
    }
}

extension InferenceService {
    /// What each method of `inference.GRPCInferenceService` needs.
    public static func requirement(of method: String) -> AccessRequirement? {
        switch method {
        case "ServerLive", "ServerReady", "ModelReady": .health
        case "ModelInfer", "ModelStreamInfer": .scope(.infer)
        case "ServerMetadata", "ModelMetadata", "ModelConfig", "ModelStatistics", "RepositoryIndex": .scope(.read)
        case "RepositoryModelLoad", "RepositoryModelUnload": .scope(.admin)
        default: nil
        }
    }
}

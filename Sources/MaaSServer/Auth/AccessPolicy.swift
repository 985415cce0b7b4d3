import MaaSCore
public import MaaSGRPC
import NIOHTTP1

/// Who may call what: the tokens, and whether health and `/metrics` need one.
///
/// ```swift
/// var options = ModelServer.Options()
/// options.auth = AccessPolicy(tokens: try TokenStore(path: "tokens"), health: false, metrics: true)
/// ```
public struct AccessPolicy: Sendable {
    public var tokens: TokenStore
    /// `--auth-health`: liveness, readiness and grpc.health.v1 need a known token (any scope).
    public var health: Bool
    /// `--auth-metrics`: `GET /metrics` needs a token with `read`.
    public var metrics: Bool

    public init(tokens: TokenStore, health: Bool = false, metrics: Bool = false) {
        self.tokens = tokens
        self.health = health
        self.metrics = metrics
    }

    /// Decides one call.
    /// - Parameters:
    ///   - authorization: the first `authorization` value, nil when there is none.
    ///   - count: how many `authorization` values the call carried.
    public func check(_ requirement: AccessRequirement, authorization: String?, count: Int) -> AccessDecision {
        switch requirement {
        case .health where !health, .metrics where !metrics:
            return .allowed(token: nil)
        case .health, .authenticated:
            return tokens.check(authorization, count: count, scope: nil)
        case .metrics:
            return tokens.check(authorization, count: count, scope: .read)
        case .scope(let scope):
            return tokens.check(authorization, count: count, scope: scope)
        }
    }

    /// Decides a gRPC call from its metadata.
    public func check(_ requirement: AccessRequirement, metadata: Metadata) -> AccessDecision {
        var first: String?
        var count = 0
        for element in metadata where element.key == "authorization" {
            count += 1
            if first == nil, case .string(let value) = element.value { first = value }
        }
        return check(requirement, authorization: first, count: count)
    }

    /// Decides an HTTP request from its headers.
    func check(_ requirement: AccessRequirement, headers: HTTPHeaders) -> AccessDecision {
        var first: String?
        var count = 0
        for (name, value) in headers where name.utf8.count == 13 && name.lowercased() == "authorization" {
            count += 1
            if first == nil { first = value }
        }
        return check(requirement, authorization: first, count: count)
    }
}

extension AccessDecision {
    /// The name of the token that was checked (allowed, or known but lacking the scope).
    public var tokenName: String? {
        switch self {
        case .allowed(let token): token
        case .forbidden(let token, _): token
        case .unauthenticated: nil
        }
    }

    /// Tells the access log which token the request came with, by name.
    func note(in notes: RequestNotes?) {
        if let notes, let name = tokenName { notes.token(name) }
    }

    /// The `WWW-Authenticate` value of a 401 or 403 (RFC 6750 §3).
    var challenge: String? {
        switch self {
        case .allowed: nil
        case .unauthenticated(let failure) where failure.presentedToken: #"Bearer realm="maas", error="invalid_token""#
        case .unauthenticated: #"Bearer realm="maas""#
        case .forbidden(_, let scope): #"Bearer realm="maas", error="insufficient_scope", scope="\#(scope)""#
        }
    }
}

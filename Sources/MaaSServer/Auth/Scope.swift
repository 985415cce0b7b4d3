/// What a token may do. Triton's restricted-API groups (`--grpc-restricted-protocol`,
/// `--http-restricted-api`) are the anchor: one shared key per group there; here each token
/// carries its own list.
public enum Scope: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// ModelInfer, ModelStreamInfer, REST infer, `/predict`, `/v1/embeddings`.
    case infer
    /// Server and model metadata, config, statistics, the repository index, `/v1/models`.
    case read
    /// RepositoryModelLoad and RepositoryModelUnload (explicit model control).
    case admin

    public var description: String { rawValue }
}

/// What a call needs before it is served.
public enum AccessRequirement: Sendable, Hashable {
    /// Liveness, readiness and grpc.health.v1: open unless the policy closes health.
    case health
    /// `GET /metrics`: open unless the policy closes it; then it needs `read` (it shows statistics).
    case metrics
    /// Any known token, whatever its scopes (a route that does not exist, so that it answers
    /// 404 only to someone who may ask).
    case authenticated
    /// A known token that holds this scope.
    case scope(Scope)
}

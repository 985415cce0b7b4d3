/// An error from loading or running a model: a stable code (which maps to a gRPC status), a
/// message that names the model, node, input or file and what was expected versus found.
public struct InferenceError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    /// For a request shed under load: when a retry may succeed (gRPC's `grpc-retry-pushback-ms`,
    /// HTTP's `Retry-After`).
    public var retryAfter: Duration?

    public init(_ code: StatusCode, _ message: String, retryAfter: Duration? = nil) {
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    /// The model (file, graph or config) is unusable.
    public static func invalidModel(_ message: String) -> InferenceError {
        InferenceError(.invalidArgument, message)
    }

    /// The request does not fit the model.
    public static func invalidInput(_ message: String) -> InferenceError {
        InferenceError(.invalidArgument, message)
    }

    /// The model uses something this server does not implement.
    public static func unsupported(_ message: String) -> InferenceError {
        InferenceError(.unimplemented, message)
    }

    public var description: String { message }
}

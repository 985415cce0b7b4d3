/// Sent through an HTTP/1.1 connection's pipeline when the server shuts down: answer the request
/// in progress (with `connection: close`), then close.
public struct ServerDrainEvent: Sendable {
    public init() {}
}

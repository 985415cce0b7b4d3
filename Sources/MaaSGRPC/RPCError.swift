public import MaaSCore

/// The outcome of a call: a code plus a human-readable message. `ok` is allocation-free.
public struct RPCStatus: Sendable, Hashable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String

    public init(code: StatusCode, message: String = "") {
        self.code = code
        self.message = message
    }

    public static let ok = RPCStatus(code: .ok)

    public var description: String {
        message.isEmpty ? "\(code)" : "\(code): \(message)"
    }
}

/// A failed call: never `ok`. Carries the code, a message naming the problem and the trailing
/// metadata the peer sent (or that the server should send).
public struct RPCError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    public var metadata: Metadata

    public init(_ code: StatusCode, _ message: String, metadata: Metadata = [:]) {
        precondition(code != .ok, "RPCError must not carry OK")
        self.code = code
        self.message = message
        self.metadata = metadata
    }

    public var status: RPCStatus { RPCStatus(code: code, message: message) }

    public var description: String { "\(code): \(message)" }

    /// The message of a call the server refused before running it (RST_STREAM REFUSED_STREAM,
    /// or a stream past a GOAWAY's last one): sending it elsewhere is always safe.
    static let refusedStreamMessage = "server refused the stream (it is shutting down or at its stream limit)"
}

/// One answered request as the access log takes it: what the transport saw (peer, protocol,
/// path, status, bytes, duration) plus the ``RequestNotes`` of the layers above it.
public struct AccessRecord: Sendable {
    /// The wire protocol, before TLS.
    public enum WireProtocol: Sendable, Hashable {
        case grpc
        /// A REST request on an HTTP/2 connection.
        case http2
        case http1_1
        case http1_0
    }

    public var wireProtocol: WireProtocol
    public var tls: Bool
    /// `ip:port` of the client.
    public var peer: String?
    /// The HTTP method; nil for gRPC calls (always POST).
    public var method: String?
    /// The gRPC method path (`/package.Service/Method`) or the HTTP request target as sent;
    /// nil when the request never got that far (a request head that did not parse).
    public var path: String?
    /// A gRPC status code for gRPC calls, an HTTP status otherwise.
    public var status: Int
    /// Message bytes (gRPC, without the 5-byte prefixes) or body bytes (HTTP).
    public var bytesIn: Int
    public var bytesOut: Int
    /// From the request's head arriving to its answer being handed to the connection.
    public var duration: Duration
    public var notes: RequestNotes.Values
    /// When the answer went out, in nanoseconds since the Unix epoch; set by the recorder.
    public var endedAt: Int64 = 0

    public init(
        wireProtocol: WireProtocol, tls: Bool, peer: String?, method: String?, path: String?, status: Int,
        bytesIn: Int, bytesOut: Int, duration: Duration, notes: RequestNotes.Values
    ) {
        self.wireProtocol = wireProtocol
        self.tls = tls
        self.peer = peer
        self.method = method
        self.path = path
        self.status = status
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.duration = duration
        self.notes = notes
    }

    /// The `protocol` field: `grpc`, REST over HTTP/2 by its ALPN names `h2c` and `h2`, and
    /// `http/1.x`; TLS adds `+tls` (`h2` already says it).
    public var protocolName: String {
        switch (wireProtocol, tls) {
        case (.grpc, false): "grpc"
        case (.grpc, true): "grpc+tls"
        case (.http2, false): "h2c"
        case (.http2, true): "h2"
        case (.http1_1, false): "http/1.1"
        case (.http1_1, true): "http/1.1+tls"
        case (.http1_0, false): "http/1.0"
        case (.http1_0, true): "http/1.0+tls"
        }
    }
}

/// Takes one record per answered request, on the thread that answered it (an event loop):
/// it must return at once and never block.
public protocol AccessRecorder: Sendable {
    func record(_ record: AccessRecord)
}

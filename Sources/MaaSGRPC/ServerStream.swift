import MaaSCore
public import NIOCore

/// One call on a server connection. Lives on the connection's event loop: use it from handler
/// callbacks, and its ``sender`` from other threads.
public final class ServerStream {
    /// The call's path, metadata, deadline and cancellation.
    public internal(set) var context: ServerContext!
    /// Called with each request message, in order.
    public var onMessage: ((ByteBuffer) -> Void)?
    /// Called once the client has sent its last message.
    public var onEnd: (() -> Void)?
    /// Called when the call ends before the handler finished it (deadline, reset, disconnect).
    public var onCancel: ((RPCError) -> Void)?
    /// Called once when the server shuts down and this connection's other calls have finished:
    /// the handler finishes what it has started, then ends the call (UNAVAILABLE tells the client
    /// to go elsewhere). Without it the call is ended with UNAVAILABLE at that point. A stream the
    /// client may hold open forever (Watch) must not hold the server's shutdown.
    public var onDrain: (() -> Void)?
    /// Metadata for the response headers; set it before the first ``send(_:)``.
    public var initialMetadata: Metadata = [:]

    let id: Int32
    unowned let connection: GRPCServerConnection

    // Request side, filled while headers arrive. These and `outbound` are only touched on the
    // event loop, never re-entrantly, so they skip the dynamic exclusivity check (measurable
    // per call).
    @exclusivity(unchecked) var requestHeaders = RequestHeaders()
    @exclusivity(unchecked) var deframer: MessageDeframer
    var handler: Kind = .pending
    var unaryRequest: ByteBuffer?
    /// A plain HTTP request's body so far.
    var plainBody: ByteBuffer?
    var inboundClosed = false

    // Response side.
    @exclusivity(unchecked) var outbound = OutboundMessages()
    var responseHeadersSent = false
    var trailers: HeaderBlock?
    var finished = false
    var bodyDeferred = false
    /// A plain HTTP response: the stream ends with its body, without trailers.
    var endsWithBody = false
    var deadlineTask: Scheduled<Void>?
    /// The server's shutdown asked this call to end (``onDrain``).
    var drainRequested = false

    // For the access log: counted always (two additions), reported only when it is on.
    /// When the first header block began.
    var startedAt = NIODeadline.uptimeNanoseconds(0)
    /// `:path`, kept from the headers when the access log is on (refusals happen before the
    /// call's context exists).
    var path: String?
    var bytesIn = 0
    var bytesOut = 0
    var notes: RequestNotes?

    enum Kind {
        case pending
        case unary(RegisteredMethod)
        case streaming
        case rejected
        /// Not gRPC: the body is gathered whole for the plain HTTP handler.
        case plain(method: String, path: String, headers: [(name: String, value: String)])
    }

    init(id: Int32, connection: GRPCServerConnection, maxMessageSize: Int) {
        self.id = id
        self.connection = connection
        self.deframer = MessageDeframer(maxMessageSize: maxMessageSize)
    }

    /// A handle for sending on this stream from any thread.
    public var sender: StreamSender {
        StreamSender(mailbox: connection.mailbox, streamID: id)
    }

    /// Whether the call has ended (finished by the handler, cancelled, or reset).
    public var isFinished: Bool { finished }

    /// Response bytes queued but not yet taken by HTTP/2 flow control.
    public var queuedBytes: Int { outbound.byteCount }

    /// Sends one response message.
    public func send(_ message: ByteBuffer) {
        connection.send(message, on: self)
    }

    /// Ends the call with `status` and trailing metadata.
    public func finish(_ status: RPCStatus = .ok, trailers: Metadata = [:]) {
        connection.finish(self, status: status, trailers: trailers)
    }

    public func fail(_ error: RPCError) {
        finish(error.status, trailers: error.metadata)
    }

    /// Drops the deadline timer, whose closure holds this stream.
    func cancelDeadline() {
        deadlineTask?.cancel()
        deadlineTask = nil
    }
}

@available(*, unavailable)
extension ServerStream: Sendable {}

/// The request header fields the server acts on, gathered as nghttp2 decodes them.
struct RequestHeaders {
    var isPOST = false
    var isGRPCContentType = false
    /// Kept only when it is not POST, for the error message.
    var method: String?
    var path: String?
    /// Kept only when it is not one of the exact gRPC spellings.
    var contentType: String?
    var timeout: String?
    var encoding: String?
    var metadata = Metadata()
    var invalidMetadataKey: String?
}

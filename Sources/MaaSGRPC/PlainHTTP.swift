public import MaaSCore
public import NIOCore

/// A request on an HTTP/2 connection that is not a gRPC call (its content-type is not
/// `application/grpc`): REST over h2c, handed whole to the ``PlainHTTPHandler``.
public struct PlainHTTPRequest: Sendable {
    public var method: String
    /// `:path`, with its query.
    public var path: String
    /// Every regular header field, lower-case, as received (content-length aside).
    public var headers: [(name: String, value: String)]
    public var body: ByteBuffer
    /// What the handler tells the access log (model, token name); nil when there is none.
    public var notes: RequestNotes?
}

/// The answer to a ``PlainHTTPRequest``. Connection-specific fields (`connection`,
/// `keep-alive`, `transfer-encoding`) are HTTP/1.1's and are dropped on HTTP/2.
public struct PlainHTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: ByteBuffer

    public init(status: Int, headers: [(name: String, value: String)], body: ByteBuffer) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// Answers plain HTTP requests on the gRPC port; `respond` may be called from any thread, once.
public typealias PlainHTTPHandler = @Sendable (PlainHTTPRequest, _ respond: @escaping @Sendable (PlainHTTPResponse) -> Void) -> Void

extension PlainHTTPResponse {
    /// The response head as nghttp2 sends it.
    var headerBlock: HeaderBlock {
        var block = HeaderBlock()
        block.add(":status", String(status))
        for (name, value) in headers {
            let lower = name.lowercased()
            switch lower {
            case "connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "content-length": continue
            default: block.add(lower, value)
            }
        }
        block.add("content-length", String(body.readableBytes))
        return block
    }
}

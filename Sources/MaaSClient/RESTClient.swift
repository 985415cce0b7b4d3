import MaaSCore
public import MaaSGRPC
import NIOConcurrencyHelpers
public import NIOCore
public import NIOHTTP1
import NIOPosix
import NIOSSL

/// An HTTP/1.1 client over one keep-alive connection (swift-nio's `HTTPClientCodec`).
///
/// Requests are pipelined: each is written as soon as it is made, and the answers, which an
/// HTTP/1.1 server sends in request order, complete the requests first in, first out. So N
/// tasks calling ``request(_:_:headers:body:)`` keep N requests in flight on one connection;
/// the server still answers them one after another.
///
/// ```swift
/// let client = try await RESTClient.connect(host: "127.0.0.1", port: 8001)
/// defer { client.close() }
/// let ready = try await client.request(.GET, "/v2/health/ready")
/// ```
public final class RESTClient: Sendable {
    /// An answer: status, headers (names lower-cased by lookup) and body.
    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: ByteBuffer
    }

    private let channel: any Channel
    private let authority: String
    private let defaultHeaders: HTTPHeaders

    private init(channel: any Channel, authority: String, defaultHeaders: HTTPHeaders) {
        self.channel = channel
        self.authority = authority
        self.defaultHeaders = defaultHeaders
    }

    /// Connects to `host:port`; with `tls`, over TLS (ALPN `http/1.1`), the handshake completed.
    /// - Throws: `TLSSetupError` for unusable TLS files, `TLSHandshakeError` when the handshake
    ///   fails, or the connect error.
    /// - Parameter headers: sent with every request unless the request sets them itself (e.g.
    ///   `authorization: Bearer …`).
    public static func connect(
        host: String, port: Int, tls: ClientTLSConfiguration? = nil, headers: HTTPHeaders = [:],
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) async throws -> RESTClient {
        let tlsContext = try tls?.makeContext(applicationProtocols: ["http/1.1"])
        let handshake = NIOLockedValueBox<EventLoopFuture<Void>?>(nil)
        let channel = try await ClientBootstrap(group: eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls, let tlsContext {
                        let done = try tls.addHandlers(context: tlsContext, host: host, to: channel.pipeline.syncOperations, eventLoop: channel.eventLoop)
                        handshake.withLockedValue { $0 = done }
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(PipelinedRequestHandler())
                }
            }
            .connect(host: host, port: port)
            .get()
        try await ClientTLSConfiguration.awaitHandshake(handshake.withLockedValue { $0 }, on: channel)
        return RESTClient(channel: channel, authority: "\(host):\(port)", defaultHeaders: headers)
    }

    /// Closes the connection; requests in flight fail with ``RESTError`` (status 0).
    public func close() {
        channel.close(promise: nil)
    }

    /// Sends one request and waits for its answer (any status: the caller decides what is an error).
    /// Throws ``RESTError`` with status 0 when the connection fails or closes first.
    /// - Parameter timeout: with no answer by then the connection is closed (an HTTP/1.1 request
    ///   cannot be withdrawn alone), failing every request in flight on it.
    public func request(
        _ method: HTTPMethod, _ path: String, headers: HTTPHeaders = [:], body: ByteBuffer? = nil, timeout: Duration? = nil
    ) async throws(RESTError) -> Response {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        for (name, value) in defaultHeaders where !head.headers.contains(name: name) { head.headers.add(name: name, value: value) }
        head.headers.replaceOrAdd(name: "host", value: authority)
        if let body { head.headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes)) }
        let promise = channel.eventLoop.makePromise(of: Response.self)
        channel.writeAndFlush(PipelinedRequest(head: head, body: body, promise: promise), promise: nil)
        let timer = timeout.map { limit in
            channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(limit.inSeconds * 1e9))) { [channel] in
                channel.pipeline.fireErrorCaught(RESTError(status: 0, message: "\(method) \(path): no answer within \(limit.inSeconds) s"))
            }
        }
        defer { timer?.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: { [channel] in
                // An HTTP/1.1 request cannot be withdrawn alone: the connection goes.
                channel.close(promise: nil)
            }
        } catch let error as RESTError {
            throw error
        } catch {
            throw RESTError(status: 0, message: "\(error)")
        }
    }
}

/// A failed HTTP exchange: the status and the server's message (the `error` of a KServe
/// `{"error": "..."}` body), or status 0 when there was no answer.
public struct RESTError: Error, Sendable, Hashable, CustomStringConvertible {
    public var status: Int
    public var message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { status == 0 ? "connection: \(message)" : "HTTP \(status): \(message)" }
}

struct PipelinedRequest: Sendable {
    var head: HTTPRequestHead
    var body: ByteBuffer?
    var promise: EventLoopPromise<RESTClient.Response>
}

/// Writes requests as they come and completes them in order as the answers arrive.
final class PipelinedRequestHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = PipelinedRequest
    typealias OutboundOut = HTTPClientRequestPart

    private var waiting = CircularBuffer<EventLoopPromise<RESTClient.Response>>()
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()
    private var closed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard !closed else {
            request.promise.fail(RESTError(status: 0, message: "the connection is closed"))
            return
        }
        waiting.append(request.promise)
        context.write(wrapOutboundOut(.head(request.head)), promise: nil)
        if let body = request.body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let value):
            head = value
            body.clear()
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head, let promise = waiting.popFirst() else {
                failAll(context, "an answer arrived for no request")
                return
            }
            self.head = nil
            // 1xx answers (100 Continue) are not the answer.
            if head.status.code < 200 {
                waiting.prepend(promise)
                return
            }
            promise.succeed(RESTClient.Response(status: Int(head.status.code), headers: head.headers, body: body))
            body = ByteBuffer()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(context, "the server closed the connection")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(context, (error as? RESTError)?.message ?? "\(error)")
    }

    private func failAll(_ context: ChannelHandlerContext, _ message: String) {
        closed = true
        while let promise = waiting.popFirst() { promise.fail(RESTError(status: 0, message: message)) }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension PipelinedRequestHandler: Sendable {}

import Foundation
import MaaSCore
import MaaSGRPC
public import NIOCore
import NIOHTTP1

/// The HTTP/1.1 side of the serving port (the first bytes of a connection decided it is not
/// HTTP/2): swift-nio's codec with pipelining, our limits, and the KServe v2 REST routes.
public enum HTTPFrontend {
    /// Limits of an HTTP/1.1 connection.
    public struct Limits: Sendable {
        /// A request head must arrive whole within this time of its first byte (slow clients).
        public var headerTimeout: TimeAmount = .seconds(10)
        /// A connection with nothing to read for this long is closed.
        public var idleTimeout: TimeAmount = .seconds(300)
        /// Largest request body, as gRPC's largest message; past it the answer is 413 and the
        /// connection closes. One request is read at a time, so this bounds a connection's memory.
        public var maxBodyBytes = 64 << 20
        /// The model `POST /predict` runs; nil answers 404 naming the option.
        public var predictModel: String?
        /// What `GET /metrics` serves; nil answers 404.
        public var metrics: MetricsEndpoint?

        public init() {}
    }

    /// Adds the HTTP/1.1 handlers to `channel` (on its event loop).
    public static func install(on channel: any Channel, core: InferenceCore, limits: Limits = Limits()) throws {
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(SlowHeadGuard(timeout: limits.headerTimeout))
        try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
        try sync.addHandler(IdleStateHandler(readTimeout: limits.idleTimeout))
        try sync.addHandler(RESTHandler(router: RESTRouter(core: core, predictModel: limits.predictModel, metrics: limits.metrics), maxBodyBytes: limits.maxBodyBytes))
    }
}

/// Told by the REST handler when a request head has arrived and when its response has gone,
/// so that the time a head takes to arrive is bounded.
enum RequestProgress {
    case headReceived
    case responseSent
}

/// Closes a connection whose request head does not arrive within the timeout of its first
/// byte: a client that drips its headers (slowloris) holds a connection only that long.
final class SlowHeadGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private var waitingForHead = true
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if waitingForHead, deadline == nil {
            deadline = context.eventLoop.scheduleTask(in: timeout) { [weak context] in context?.close(promise: nil) }
        }
        context.fireChannelRead(data)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let progress = event as? RequestProgress else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch progress {
        case .headReceived:
            waitingForHead = false
            deadline?.cancel()
            deadline = nil
        case .responseSent:
            waitingForHead = true
        }
        promise?.succeed()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }
}

/// One request at a time (swift-nio's pipelining handler queues the rest): the head, the body
/// up to the limit, then the route's answer.
final class RESTHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let router: RESTRouter
    private let maxBodyBytes: Int
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var refused = false
    /// Between a request's head and its response's end.
    private var inFlight = false
    /// The server is shutting down: the response in progress is the last.
    private var draining = false

    init(router: RESTRouter, maxBodyBytes: Int) {
        self.router = router
        self.maxBodyBytes = maxBodyBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            context.triggerUserOutboundEvent(RequestProgress.headReceived, promise: nil)
            inFlight = true
            self.head = head
            body = nil
            refused = false
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                refuseBody(context, length)
            } else if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(var chunk):
            guard !refused else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodyBytes {
                refuseBody(context, nil)
                return
            }
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end:
            guard let head, !refused else { return }
            self.head = nil
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            router.answer(head, body: body ?? ByteBuffer()) { response in
                bound.eventLoop.execute {
                    let (handler, context) = bound.value
                    handler.send(context, response, for: head, keepAlive: head.isKeepAlive)
                }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ServerDrainEvent {
            draining = true
            if !inFlight { context.close(promise: nil) }
        } else if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// 413 before reading a body past the limit; the connection closes, as the rest of the body
    /// would otherwise have to be read and dropped.
    private func refuseBody(_ context: ChannelHandlerContext, _ length: Int?) {
        refused = true
        let stated = length.map { "\($0) bytes" } ?? "more"
        let response = RESTResponse.error(413, "request body of \(stated) exceeds the \(maxBodyBytes)-byte limit")
        send(context, response, for: head ?? HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), keepAlive: false)
    }

    private func send(_ context: ChannelHandlerContext, _ response: RESTResponse, for request: HTTPRequestHead, keepAlive wanted: Bool) {
        let keepAlive = wanted && !draining
        inFlight = false
        var headers = response.headers
        headers.replaceOrAdd(name: "content-length", value: String(response.body.readableBytes))
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD, response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        context.triggerUserOutboundEvent(RequestProgress.responseSent, promise: nil)
        if !keepAlive {
            done.futureResult.whenComplete { [weak context] _ in context?.close(promise: nil) }
        }
    }
}

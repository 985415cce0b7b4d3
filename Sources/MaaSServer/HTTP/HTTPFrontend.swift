import MaaSCore
public import MaaSGRPC
import NIOConcurrencyHelpers
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
        /// connection closes. Reading pauses while the bodies of the requests in progress reach
        /// it, so it also bounds a connection's buffered requests.
        public var maxBodyBytes = 64 << 20
        /// Requests of one connection in progress at once (pipelined); reading pauses past it.
        public var maxPipelined = 64
        /// The model `POST /predict` runs; nil answers 404 naming the option.
        public var predictModel: String?

        public init() {}
    }

    /// Adds the HTTP/1.1 handlers to `channel` (on its event loop).
    public static func install(on channel: any Channel, core: InferenceCore, limits: Limits = Limits()) throws {
        let sync = channel.pipeline.syncOperations
        let timeouts = ConnectionTimeouts(headTimeout: limits.headerTimeout, idleTimeout: limits.idleTimeout)
        try sync.addHandler(timeouts)
        // Response headers are ours (names and values this module writes, never a client's
        // bytes), so swift-nio's outbound check of each would only cost time.
        try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true, withOutboundHeaderValidation: false)
        try sync.addHandler(RESTHandler(
            router: RESTRouter(core: core, predictModel: limits.predictModel), timeouts: timeouts,
            maxBodyBytes: limits.maxBodyBytes, maxPipelined: limits.maxPipelined))
    }

    /// REST over h2c: the HTTP/2 requests of the serving port that are not gRPC calls.
    public static func plainHTTPHandler(core: InferenceCore, limits: Limits = Limits()) -> PlainHTTPHandler {
        let router = RESTRouter(core: core, predictModel: limits.predictModel)
        return { request, respond in
            var headers = HTTPHeaders()
            for (name, value) in request.headers { headers.add(name: name, value: value) }
            let rest = RESTRequest(method: HTTPMethod(rawValue: request.method), uri: request.path, headers: headers, body: request.body)
            var calls: [InferenceCore.Call] = []
            router.answer(rest, calls: &calls) { response in
                respond(PlainHTTPResponse(status: response.status, headers: response.headers.map { ($0.name, $0.value) }, body: response.body))
            }
            if !calls.isEmpty { router.core.infer(calls) }
        }
    }
}

/// The time limits of an HTTP/1.1 connection, in one handler at the socket end (it sees the raw
/// bytes, so a head is timed from its first byte): a request head must arrive whole within
/// `headTimeout` (slowloris clients hold a connection only that long), and a connection with
/// nothing to read for `idleTimeout` and no request in progress is closed. The REST handler
/// tells it directly when a head has arrived and a request has ended (same event loop).
final class ConnectionTimeouts: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let headTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var waitingForHead = true
    private var headDeadline: Scheduled<Void>?
    private var idleCheck: Scheduled<Void>?
    private var lastRead = NIODeadline.now()
    /// Whether a request is being read or answered: an idle connection is closed only between requests.
    var isBusy: () -> Bool = { false }

    init(headTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.headTimeout = headTimeout
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastRead = .now()
        scheduleIdleCheck(context, at: lastRead + idleTimeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        headDeadline?.cancel()
        idleCheck?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        if waitingForHead, headDeadline == nil {
            let channel = context.channel
            headDeadline = context.eventLoop.scheduleTask(in: headTimeout) { channel.close(promise: nil) }
        }
        context.fireChannelRead(data)
    }

    func headReceived() {
        waitingForHead = false
        headDeadline?.cancel()
        headDeadline = nil
    }

    /// The next bytes start a new head.
    func requestEnded() {
        waitingForHead = true
    }

    private func scheduleIdleCheck(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        // One timer per connection, moved on when it fires rather than re-armed on every read.
        idleCheck = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            let due = lastRead + idleTimeout
            if due <= .now(), !isBusy() {
                context.close(promise: nil)
            } else {
                scheduleIdleCheck(context, at: max(due, .now() + .nanoseconds(idleTimeout.nanoseconds / 10)))
            }
        }
    }
}

/// Reads requests as they come and answers them in order (HTTP/1.1 pipelining): up to
/// `maxPipelined` run at once, so a client's pipelined requests batch together as concurrent
/// gRPC calls do; past that, or past the body budget, or while the client does not read its
/// answers, reading pauses.
final class RESTHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let router: RESTRouter
    private let timeouts: ConnectionTimeouts
    private let maxBodyBytes: Int
    private let maxPipelined: Int
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var refused = false
    /// Requests read and not yet answered, with their answers once they come, in request order.
    private var queue: [(head: HTTPRequestHead, response: RESTResponse?, bodyBytes: Int)] = []
    /// The sequence number of queue's first entry; requests are numbered as they are read.
    private var firstSequence = 0
    private var bufferedBytes = 0
    /// A request asked to close, or the server is draining: no request after the one being
    /// read is taken.
    private var closing = false
    private var draining = false
    private var readPending = false
    /// The request being read asked for `100 Continue`, not yet sent.
    private var continueVersion: HTTPVersion?
    /// Inference calls decoded in this read cycle, submitted together when it completes.
    private var calls: [InferenceCore.Call] = []
    private var mailbox: ResponseMailbox?

    init(router: RESTRouter, timeouts: ConnectionTimeouts, maxBodyBytes: Int, maxPipelined: Int = 64) {
        self.router = router
        self.timeouts = timeouts
        self.maxBodyBytes = maxBodyBytes
        self.maxPipelined = maxPipelined
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard !closing else { return }
            timeouts.headReceived()
            self.head = head
            body = nil
            refused = false
            continueVersion = nil
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                refuseBody(context, head, length)
            } else if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                // An interim answer must not overtake the final answers queued before it.
                continueVersion = head.version
                sendContinueIfDue(context)
            }
        case .body(var chunk):
            guard !refused, let head else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodyBytes {
                refuseBody(context, head, nil)
                return
            }
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end:
            timeouts.requestEnded()
            guard let head, !refused else { return }
            self.head = nil
            let request = RESTRequest(method: head.method, uri: head.uri, headers: head.headers, body: body ?? ByteBuffer())
            body = nil
            let sequence = firstSequence + queue.count
            queue.append((head, nil, request.body.readableBytes))
            bufferedBytes += request.body.readableBytes
            if !head.isKeepAlive { closing = true }
            let mailbox = self.mailbox!
            // Not `&calls`: an answer given at once may resume reading, and ByteToMessageHandler
            // then delivers the next buffered request re-entrantly.
            var decoded: [InferenceCore.Call] = []
            router.answer(request, calls: &decoded) { response in mailbox.post(sequence, response) }
            calls += decoded
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !calls.isEmpty {
            var taken: [InferenceCore.Call] = []
            swap(&taken, &calls)
            router.core.infer(taken)
            calls.reserveCapacity(taken.count)
        }
        context.fireChannelReadComplete()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        mailbox = ResponseMailbox(NIOLoopBound((self, context), eventLoop: context.eventLoop))
        timeouts.isBusy = { [unowned self] in !queue.isEmpty || head != nil }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        mailbox?.detach()
    }

    func read(context: ChannelHandlerContext) {
        if shouldPause(context) {
            readPending = true
        } else {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeIfPossible(context)
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ServerDrainEvent {
            draining = true
            closing = true
            if queue.isEmpty, head == nil { context.close(promise: nil) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func shouldPause(_ context: ChannelHandlerContext) -> Bool {
        closing || queue.count >= maxPipelined || bufferedBytes >= maxBodyBytes || !context.channel.isWritable
    }

    private func resumeIfPossible(_ context: ChannelHandlerContext) {
        if readPending, !shouldPause(context) {
            readPending = false
            context.read()
        }
    }

    /// Answers have come: each, and every answer ready after it, go out in request order.
    fileprivate func complete(_ context: ChannelHandlerContext, _ answers: [(sequence: Int, response: RESTResponse)]) {
        for (sequence, response) in answers {
            let index = sequence - firstSequence
            guard index >= 0, index < queue.count else { continue }
            queue[index].response = response
        }
        var wrote = false
        while let first = queue.first, let ready = first.response {
            queue.removeFirst()
            firstSequence += 1
            bufferedBytes -= first.bodyBytes
            let last = queue.isEmpty && closing && head == nil
            write(context, ready, for: first.head, keepAlive: first.head.isKeepAlive && !last && !draining)
            wrote = true
            if last || !first.head.isKeepAlive { break }
        }
        if wrote { context.flush() }
        sendContinueIfDue(context)
        resumeIfPossible(context)
    }

    private func sendContinueIfDue(_ context: ChannelHandlerContext) {
        guard let version = continueVersion, queue.isEmpty, !closing else { return }
        continueVersion = nil
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .continue))), promise: nil)
    }

    /// 413 before reading a body past the limit; the connection closes after the answers
    /// before it, as the rest of the body would otherwise have to be read and dropped.
    private func refuseBody(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ length: Int?) {
        refused = true
        closing = true
        let stated = length.map { "\($0) bytes" } ?? "more"
        let sequence = firstSequence + queue.count
        var closingHead = head
        closingHead.headers.replaceOrAdd(name: "connection", value: "close")
        queue.append((closingHead, nil, 0))
        complete(context, [(sequence, .error(413, "request body of \(stated) exceeds the \(maxBodyBytes)-byte limit"))])
    }

    private func write(_ context: ChannelHandlerContext, _ response: RESTResponse, for request: HTTPRequestHead, keepAlive: Bool) {
        var headers = response.headers
        headers.add(name: "content-length", value: String(response.body.readableBytes))
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD, response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        if keepAlive {
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// Carries answers from the threads that produce them to the connection's event loop, one hop
/// per batch: the first answer posted schedules the drain, later ones join it (as the gRPC
/// side's ConnectionMailbox), so a batch's answers go out in one write.
private final class ResponseMailbox: Sendable {
    private let target: NIOLoopBoundBox<(RESTHandler, ChannelHandlerContext)?>
    private let pending = NIOLockedValueBox<[(sequence: Int, response: RESTResponse)]>([])

    init(_ target: NIOLoopBound<(RESTHandler, ChannelHandlerContext)>) {
        self.target = NIOLoopBoundBox(target.value, eventLoop: target.eventLoop)
    }

    func post(_ sequence: Int, _ response: RESTResponse) {
        if target.eventLoop.inEventLoop {
            if let (handler, context) = target.value { handler.complete(context, [(sequence, response)]) }
            return
        }
        let first = pending.withLockedValue { pending in
            pending.append((sequence, response))
            return pending.count == 1
        }
        if first { target.eventLoop.execute { self.drain() } }
    }

    /// On the event loop, when the handler leaves the pipeline: later answers are dropped.
    func detach() {
        target.value = nil
    }

    private func drain() {
        let answers = pending.withLockedValue { pending in
            var taken: [(sequence: Int, response: RESTResponse)] = []
            swap(&taken, &pending)
            return taken
        }
        if let (handler, context) = target.value { handler.complete(context, answers) }
    }
}

import MaaSCore
import MaaSGRPC
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Reads requests as they come and answers them in order (HTTP/1.1 pipelining): up to
/// `maxPipelined` run at once, so a client's pipelined requests batch together as concurrent
/// gRPC calls do; past that, or past the body budget, or while the client does not read its
/// answers, reading pauses.
///
/// Responses are encoded here, every answer ready at once into one buffer and one write: the
/// head, body and end of each going through swift-nio's encoder as three pipeline writes cost
/// more than the rest of the response. swift-nio's decoder reads the requests.
final class RESTHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let router: RESTRouter
    private let timeouts: ConnectionTimeouts
    private let maxBodyBytes: Int
    private let maxHeaderBytes: Int
    private let maxPipelined: Int
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var refused = false
    /// Requests read and not yet answered, with their answers once they come, in request order.
    private var queue: [Pending] = []
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
    /// The access log; with it, the peer and TLS are found once, and each request gets notes.
    private let recorder: (any AccessRecorder)?
    private var peer: String?
    private var tls = false
    /// When the head of the request being read arrived (kept only for the access log).
    private var headStartedAt = NIODeadline.uptimeNanoseconds(0)

    private struct Pending {
        var head: HTTPRequestHead
        var response: RESTResponse?
        var bodyBytes: Int
        var notes: RequestNotes?
        var startedAt: NIODeadline
    }

    init(
        router: RESTRouter, timeouts: ConnectionTimeouts, maxBodyBytes: Int, maxHeaderBytes: Int, maxPipelined: Int = 64,
        recorder: (any AccessRecorder)? = nil
    ) {
        self.recorder = recorder
        self.router = router
        self.timeouts = timeouts
        self.maxBodyBytes = maxBodyBytes
        self.maxHeaderBytes = maxHeaderBytes
        self.maxPipelined = maxPipelined
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard !closing else { return }
            timeouts.headReceived()
            if recorder != nil { headStartedAt = context.eventLoop.now }
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
            let notes = recorder != nil ? RequestNotes() : nil
            let request = RESTRequest(method: head.method, uri: head.uri, headers: head.headers, body: body ?? ByteBuffer(), notes: notes)
            body = nil
            let sequence = firstSequence + queue.count
            queue.append(Pending(head: head, bodyBytes: request.body.readableBytes, notes: notes, startedAt: headStartedAt))
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
            CallCoalescer.current().submit(taken, to: router.core, on: context.eventLoop)
            calls.reserveCapacity(taken.count)
        }
        context.fireChannelReadComplete()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        mailbox = ResponseMailbox(NIOLoopBound((self, context), eventLoop: context.eventLoop))
        if recorder != nil {
            peer = context.channel.remoteAddress?.hostPort
            tls = context.pipeline.syncOperations.hasTLS
        }
        timeouts.isBusy = { [unowned self] in !queue.isEmpty || head != nil }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        mailbox?.detach()
        // Requests the connection closed on before they were answered (the client left, or
        // shutdown's grace period ended) are logged as 499, nginx's "client closed request".
        for pending in queue { record(context, pending, status: 499, bytesOut: 0) }
        queue.removeAll()
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
        } else if case ChannelEvent.inputClosed = event {
            // The client has sent all it will (`printf ... | nc`, or a half-close after its
            // requests): what it sent is answered, then the connection closes. An unfinished
            // request was refused by errorCaught already (the decoder's end-of-input error).
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
        var out = context.channel.allocator.buffer(capacity: 0)
        var closeAfter = false
        while let first = queue.first, let ready = first.response {
            queue.removeFirst()
            firstSequence += 1
            bufferedBytes -= first.bodyBytes
            let last = queue.isEmpty && closing && head == nil
            let keepAlive = first.head.isKeepAlive && !last && !draining
            HTTPResponseEncoding.append(ready, for: first.head, keepAlive: keepAlive, to: &out)
            if recorder != nil { record(context, first, status: ready.status, bytesOut: first.head.method == .HEAD ? 0 : ready.body.readableBytes) }
            if !keepAlive {
                closeAfter = true
                break
            }
        }
        if out.readableBytes > 0 {
            if closeAfter {
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
                return
            }
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
        sendContinueIfDue(context)
        resumeIfPossible(context)
    }

    private func record(_ context: ChannelHandlerContext, _ pending: Pending, status: Int, bytesOut: Int) {
        guard let recorder else { return }
        let head = pending.head
        recorder.record(AccessRecord(
            wireProtocol: head.version.major == 1 && head.version.minor == 0 ? .http1_0 : .http1_1, tls: tls, peer: peer,
            method: head.method.rawValue, path: head.uri, status: status, bytesIn: pending.bodyBytes, bytesOut: bytesOut,
            duration: .nanoseconds((context.eventLoop.now - pending.startedAt).nanoseconds),
            notes: pending.notes?.snapshot ?? RequestNotes.Values()))
    }

    private func sendContinueIfDue(_ context: ChannelHandlerContext) {
        guard let version = continueVersion, queue.isEmpty, !closing else { return }
        continueVersion = nil
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/\(version.major).\(version.minor) 100 Continue\r\n\r\n")), promise: nil)
    }

    /// A request swift-nio's decoder cannot parse ends the connection (the decoder closes it
    /// after this returns): the answers ready before it go out, then 400, or 413 for a head past
    /// the size limit, naming the problem.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        // Once the connection is closing, what follows is not read as requests: bytes after a
        // request that asked to close (llhttp refuses them), or a second report of a failure
        // already answered (swift-nio reports a version other than 1.x twice). The answers
        // queued close the connection. Only the body of a request still being read (the server
        // began to drain during it) is answered.
        guard !closing || (head != nil && !refused) else { return }
        closing = true
        head = nil
        let response: RESTResponse = switch parserError {
        case .headerOverflow: .error(413, "request head exceeds the \(maxHeaderBytes)-byte limit")
        default: .error(400, "malformed HTTP/1.1 request: \(parserError)")
        }
        var out = context.channel.allocator.buffer(capacity: 0)
        // Only answers already complete can precede it; those still running are cut.
        while let first = queue.first, let ready = first.response {
            queue.removeFirst()
            HTTPResponseEncoding.append(ready, for: first.head, keepAlive: true, to: &out)
            if recorder != nil { record(context, first, status: ready.status, bytesOut: first.head.method == .HEAD ? 0 : ready.body.readableBytes) }
        }
        for cut in queue { record(context, cut, status: 499, bytesOut: 0) }
        queue.removeAll()
        HTTPResponseEncoding.append(response, for: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), keepAlive: false, to: &out)
        if let recorder {
            // No head to name: the request did not parse.
            recorder.record(AccessRecord(
                wireProtocol: .http1_1, tls: tls, peer: peer, method: nil, path: nil, status: response.status,
                bytesIn: 0, bytesOut: response.body.readableBytes, duration: .zero, notes: RequestNotes.Values()))
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
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
        queue.append(Pending(head: closingHead, bodyBytes: 0, notes: nil, startedAt: headStartedAt))
        complete(context, [(sequence, .error(413, "request body of \(stated) exceeds the \(maxBodyBytes)-byte limit"))])
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

/// HTTP/1.1 responses written as bytes: status line, our headers, content-length, and the
/// body (none for HEAD). Header names and values are this module's own, never a client's.
enum HTTPResponseEncoding {
    static func append(_ response: RESTResponse, for request: HTTPRequestHead, keepAlive: Bool, to out: inout ByteBuffer) {
        out.writeString(request.version.major == 1 && request.version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        out.writeString(String(response.status))
        out.writeInteger(UInt8(ascii: " "))
        out.writeString(HTTPResponseStatus(statusCode: response.status).reasonPhrase)
        out.writeString("\r\n")
        for (name, value) in response.headers {
            out.writeString(name)
            out.writeString(": ")
            out.writeString(value)
            out.writeString("\r\n")
        }
        out.writeString("content-length: ")
        out.writeString(String(response.body.readableBytes))
        out.writeString(keepAlive ? "\r\n\r\n" : "\r\nconnection: close\r\n\r\n")
        if request.method != .HEAD {
            var body = response.body
            out.writeBuffer(&body)
        }
    }
}

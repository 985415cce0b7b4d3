import Logging
import MaaSCore
public import NIOCore

/// One HTTP/2 connection of a ``GRPCServer``: feeds received bytes to nghttp2, turns streams into
/// gRPC calls, and writes nghttp2's output once per read cycle or per batch of completions.
///
/// Everything here runs on the channel's event loop; handlers on other threads reach it through
/// the ``ConnectionMailbox``.
public final class GRPCServerConnection: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    let configuration: GRPCServerConfiguration
    private let router: Router
    private let plainHTTP: PlainHTTPHandler?
    /// The access log; with it, `peer` and `tls` are found once per connection.
    let recorder: (any AccessRecorder)?
    var peer: String?
    var tls = false
    var logger: Logger
    private let onClose: @Sendable () -> Void
    /// Told how many calls were cut when the shutdown's grace period ran out.
    let onCut: @Sendable (Int) -> Void

    private(set) var session: H2Session!
    private(set) var context: ChannelHandlerContext?
    private(set) var mailbox: ConnectionMailbox!
    // Hot state, only touched on the event loop and never re-entrantly: no dynamic exclusivity check.
    @exclusivity(unchecked) private(set) var streams: [Int32: ServerStream] = [:]
    /// The stream whose header block is being decoded (blocks never interleave in HTTP/2).
    private var headerStream: ServerStream?
    // Unary calls whose request completed in this read cycle, and the method of each.
    @exclusivity(unchecked) private var pendingCalls: [UnaryCall] = []
    @exclusivity(unchecked) private var pendingMethods: [RegisteredMethod] = []
    private var inReadCycle = false
    /// nghttp2 is parsing received bytes (its callbacks are running).
    private var parsing = false
    /// Answers given while parsing, applied once the bytes are all parsed.
    private var deferredEvents: [StreamEvent] = []
    private var pendingRead = false
    /// nghttp2 is producing output for the socket (``flush()``).
    private var writing = false
    private var flushAgain = false
    private var closeAfterWrite = false
    /// Output shut, waiting for the peer to close (``closeLingering(_:)``).
    private var lingering = false
    var closing = false
    private var bufferedInboundBytes = 0
    /// Response bytes waiting for flow control, across all streams.
    private var queuedOutboundBytes = 0
    private var remoteAddress: SocketAddress?

    // Timeouts, checked by one timer per connection rather than one per stream.
    private var housekeeping: Scheduled<Void>?
    private var connectedAt = NIODeadline.uptimeNanoseconds(0)
    private var receivedSettings = false
    private var headerBlockStartedAt: NIODeadline?
    private var idleSince: NIODeadline?
    var shutdownState: ShutdownState = .serving

    enum ShutdownState {
        case serving
        /// `since`: when the notice went out; the final GOAWAY follows the PING sent with it
        /// (the client has read the notice), or after a second at the latest.
        case noticeSent(deadline: NIODeadline, since: NIODeadline)
        case goAwaySent(deadline: NIODeadline)
    }

    init(
        configuration: GRPCServerConfiguration,
        router: Router,
        plainHTTP: PlainHTTPHandler? = nil,
        recorder: (any AccessRecorder)? = nil,
        logger: Logger,
        onClose: @escaping @Sendable () -> Void,
        onCut: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        self.onCut = onCut
        self.recorder = recorder
        self.configuration = configuration
        self.router = router
        self.plainHTTP = plainHTTP
        self.logger = logger
        self.onClose = onClose
    }

    // MARK: Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connectedAt = context.eventLoop.now
        idleSince = context.eventLoop.now
        self.mailbox = ConnectionMailbox(eventLoop: context.eventLoop, connection: self)
        remoteAddress = context.channel.remoteAddress
        if let remoteAddress {
            logger[metadataKey: "peer"] = "\(remoteAddress)"
        }
        if recorder != nil {
            peer = remoteAddress?.hostPort
            tls = context.pipeline.syncOperations.hasTLS
        }
        session = H2Session(role: .server, delegate: self)
        session.submitSettings([
            (H2SettingID.maxConcurrentStreams, configuration.maxConcurrentStreams),
            (H2SettingID.initialWindowSize, configuration.initialStreamWindow),
            (H2SettingID.maxHeaderListSize, configuration.maxHeaderListSize),
            // No SETTINGS_NO_RFC7540_PRIORITIES: with it nghttp2 keeps no closed streams, so
            // frames on them (RFC 9113 5.1: STREAM_CLOSED) and bad PRIORITY frames went unanswered.
            (H2SettingID.enablePush, 0),
        ])
        session.setConnectionWindow(configuration.connectionWindow)
        scheduleHousekeeping()
        if context.channel.isActive { flush() }
    }

    public func channelActive(context: ChannelHandlerContext) {
        connectedAt = context.eventLoop.now
        idleSince = context.eventLoop.now
        flush()
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !lingering else { return }
        let bytes = unwrapInboundIn(data)
        inReadCycle = true
        do {
            parsing = true
            defer { parsing = false }
            try bytes.withUnsafeReadableBytes { try session.receive($0) }
        } catch {
            logger.debug("closing connection after HTTP/2 protocol error", metadata: ["error": "\(error)"])
            // nghttp2 queued a GOAWAY naming the error: send it, then close.
            closing = true
            flush()
            closeLingering(context)
        }
        if !deferredEvents.isEmpty {
            var events: [StreamEvent] = []
            swap(&events, &deferredEvents)
            for event in events { apply(event) }
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        dispatchPendingUnary()
        inReadCycle = false
        flush()
        context.fireChannelReadComplete()
    }

    public func read(context: ChannelHandlerContext) {
        // A client that does not read our responses must not be able to send more requests:
        // reading stops while the socket's outbound buffer is above its high-water mark.
        if context.channel.isWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            flush()
            if pendingRead {
                pendingRead = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        closing = true
        mailbox.detach()
        housekeeping?.cancel()
        housekeeping = nil
        let open = streams
        streams.removeAll()
        for stream in open.values where !stream.finished {
            cancel(stream, RPCError(.cancelled, "connection closed"))
        }
        onClose()
        context.fireChannelInactive()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        mailbox.detach()
        housekeeping?.cancel()
        self.context = nil
    }

    /// Bytes of partial request messages held across all streams.
    var bufferedInboundByteCount: Int { bufferedInboundBytes }

    var openStreamCount: Int { streams.count }

    /// Response bytes waiting for flow control across all streams.
    var queuedOutboundByteCount: Int { queuedOutboundBytes }

    // MARK: Output

    /// Writes everything nghttp2 has queued, as long as the socket takes it.
    func flush() {
        guard let context, context.channel.isActive else { return }
        // nghttp2's callbacks run inside the send (a stream closes as its last frame goes out),
        // and what they do may want a flush: nghttp2's output buffer is only valid until its next
        // send, so they ask for another round instead, and a close waits for the bytes.
        if writing {
            flushAgain = true
            return
        }
        writing = true
        defer { writing = false }
        repeat {
            flushAgain = false
            do {
                try session.writePending(to: context)
            } catch {
                logger.debug("HTTP/2 output failed", metadata: ["error": "\(error)"])
                context.close(promise: nil)
                return
            }
        } while flushAgain && context.channel.isActive
        if closeAfterWrite || (!session.wantsRead && !session.wantsWrite) {
            closeAfterWrite = false
            closeLingering(context)
        }
    }

    /// Flushes now unless a read cycle is in progress (which flushes when it completes).
    private func flushSoon() {
        if !inReadCycle { flush() }
    }

    /// Applies completions that arrived through the mailbox, then flushes once.
    func apply(_ events: [StreamEvent]) {
        let wasInReadCycle = inReadCycle
        // One flush for the whole batch.
        inReadCycle = true
        for event in events { apply(event) }
        inReadCycle = wasInReadCycle
        flushSoon()
    }

    func apply(_ event: StreamEvent) {
        if parsing {
            // Answered while nghttp2 is still parsing this read's frames (a REST request answered
            // at once): held until the read is parsed, so that what the later frames call for (a
            // GOAWAY for a protocol error, a RST_STREAM for a stream that is closed) goes first,
            // as RFC 9113 has the endpoint act on frames in order.
            deferredEvents.append(event)
            return
        }
        switch event {
        case .unaryResponse(let id, let response, let trailers):
            guard let stream = streams[id], !stream.finished else { return }
            send(response, on: stream)
            finish(stream, status: .ok, trailers: trailers)
        case .message(let id, let message):
            guard let stream = streams[id], !stream.finished else { return }
            send(message, on: stream)
        case .finish(let id, let status, let trailers):
            guard let stream = streams[id], !stream.finished else { return }
            finish(stream, status: status, trailers: trailers)
        case .plainResponse(let id, let response):
            guard let stream = streams[id], !stream.finished else { return }
            respond(response, on: stream)
        }
    }

    private func dispatchPendingUnary() {
        guard !pendingCalls.isEmpty else { return }
        var calls: [UnaryCall] = []
        var methods: [RegisteredMethod] = []
        swap(&calls, &pendingCalls)
        swap(&methods, &pendingMethods)
        // Consecutive calls to the same method go to its handler together.
        var start = 0
        while start < calls.count {
            var end = start + 1
            while end < calls.count, methods[end] === methods[start] { end += 1 }
            guard case .unary(let handle) = methods[start].handler else { preconditionFailure("unary call on a streaming method") }
            handle(start == 0 && end == calls.count ? calls : Array(calls[start..<end]))
            start = end
        }
        pendingCalls.reserveCapacity(calls.count)
        pendingMethods.reserveCapacity(calls.count)
    }

    // MARK: Responding

    func send(_ message: ByteBuffer, on stream: ServerStream) {
        guard !stream.finished else { return }
        if stream.outbound.byteCount + message.readableBytes > configuration.maxQueuedBytesPerStream
            || queuedOutboundBytes + message.readableBytes > configuration.maxQueuedBytesPerConnection
        {
            logger.debug("resetting stream whose client does not read", metadata: ["stream": "\(stream.id)"])
            session.resetStream(streamID: stream.id, errorCode: H2ErrorCode.enhanceYourCalm)
            cancel(stream, RPCError(.resourceExhausted, "client is not reading responses; \(stream.outbound.byteCount) bytes queued on the stream, \(queuedOutboundBytes) on the connection"))
            flushSoon()
            return
        }
        if !stream.responseHeadersSent {
            stream.responseHeadersSent = true
            var headers = ResponseHeaders.ok
            for (name, value) in stream.initialMetadata.wireHeaders { headers.add(name, value) }
            session.submitResponse(streamID: stream.id, headers: headers, hasBody: true)
        }
        queuedOutboundBytes -= stream.outbound.byteCount
        stream.bytesOut += message.readableBytes
        stream.outbound.append(message)
        queuedOutboundBytes += stream.outbound.byteCount
        if stream.bodyDeferred {
            stream.bodyDeferred = false
            session.resumeBody(streamID: stream.id)
        }
        flushSoon()
    }

    func finish(_ stream: ServerStream, status: RPCStatus, trailers: Metadata) {
        guard !stream.finished else { return }
        stream.finished = true
        stream.cancelDeadline()
        if recorder != nil { recordAccess(stream, status: Int(status.code.rawValue)) }
        defer { drainStreamsIfDue() }
        var block = HeaderBlock()
        if !stream.responseHeadersSent {
            // Trailers-Only: one HEADERS frame carries the status and ends the stream.
            stream.responseHeadersSent = true
            block = ResponseHeaders.ok
            appendStatus(status, trailers, to: &block)
            session.submitResponse(streamID: stream.id, headers: block, hasBody: false)
        } else {
            if status.code == .ok && status.message.isEmpty && trailers.isEmpty {
                block = ResponseHeaders.okTrailers
            } else {
                appendStatus(status, trailers, to: &block)
            }
            stream.trailers = block
            if stream.bodyDeferred {
                stream.bodyDeferred = false
                session.resumeBody(streamID: stream.id)
            }
        }
        flushSoon()
    }

    /// Answers a plain HTTP request: its head, then its body, which ends the stream.
    private func respond(_ response: PlainHTTPResponse, on stream: ServerStream) {
        stream.finished = true
        stream.responseHeadersSent = true
        defer { drainStreamsIfDue() }
        let isHEAD = if case .plain(let method, _, _) = stream.handler { method == "HEAD" } else { false }
        if recorder != nil {
            stream.bytesOut = isHEAD ? 0 : response.body.readableBytes
            recordAccess(stream, status: response.status)
        }
        if response.body.readableBytes == 0 || isHEAD {
            session.submitResponse(streamID: stream.id, headers: response.headerBlock, hasBody: false)
        } else {
            stream.outbound.framesMessages = false
            stream.outbound.append(response.body)
            queuedOutboundBytes += response.body.readableBytes
            stream.endsWithBody = true
            session.submitResponse(streamID: stream.id, headers: response.headerBlock, hasBody: true)
        }
        flushSoon()
    }

    private func appendStatus(_ status: RPCStatus, _ trailers: Metadata, to block: inout HeaderBlock) {
        block.add("grpc-status", String(status.code.rawValue))
        if !status.message.isEmpty {
            block.add("grpc-message", PercentEncoding.encode(status.message))
        }
        for (name, value) in trailers.wireHeaders { block.add(name, value) }
    }

    /// Ends a call that the handler did not finish: raises its cancellation and tells the handler.
    private func cancel(_ stream: ServerStream, _ error: RPCError) {
        guard !stream.finished else { return }
        stream.finished = true
        stream.cancelDeadline()
        if recorder != nil { recordCancelled(stream, error) }
        stream.context?.cancellation.cancel()
        stream.onCancel?(error)
        releaseCallbacks(stream)
        drainStreamsIfDue()
    }

    /// Drops the handler's closures, which often capture the stream itself.
    private func releaseCallbacks(_ stream: ServerStream) {
        stream.onMessage = nil
        stream.onEnd = nil
        stream.onCancel = nil
        stream.onDrain = nil
    }

    /// Answers a request that fails before any handler sees it: Trailers-Only, then a reset if
    /// the client is still sending.
    private func reject(_ stream: ServerStream, httpStatus: String = "200", _ error: RPCError, extra: [(String, String)] = []) {
        stream.handler = .rejected
        stream.finished = true
        defer { drainStreamsIfDue() }
        var block = HeaderBlock()
        block.add(":status", httpStatus)
        block.add("content-type", "application/grpc")
        for (name, value) in extra { block.add(name, value) }
        appendStatus(error.status, error.metadata, to: &block)
        stream.responseHeadersSent = true
        session.submitResponse(streamID: stream.id, headers: block, hasBody: false)
        if recorder != nil { recordAccess(stream, status: Int(error.code.rawValue)) }
        logger.debug("rejected call", metadata: ["stream": "\(stream.id)", "status": "\(error)"])
    }

    private func expire(_ stream: ServerStream, after timeout: Int64) {
        guard !stream.finished else { return }
        let error = RPCError(.deadlineExceeded, "deadline exceeded (grpc-timeout \(formatNanos(timeout)))")
        stream.context?.cancellation.cancel()
        stream.onCancel?(error)
        finish(stream, status: error.status, trailers: [:])
        releaseCallbacks(stream)
    }

    // MARK: Timeouts and shutdown

    private func scheduleHousekeeping() {
        guard let context, !closing else { return }
        // Strong captures: the task is cancelled when the connection closes, and a weak reference
        // would put the connection's reference counts in a side table, slowing every retain.
        housekeeping = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) {
            self.checkTimeouts()
            self.scheduleHousekeeping()
        }
    }

    private func checkTimeouts() {
        guard let context, !closing else { return }
        let now = context.eventLoop.now
        if !receivedSettings, now - connectedAt > .init(configuration.handshakeTimeout) {
            logger.debug("closing connection that sent no HTTP/2 preface in time")
            closeNow(context)
            return
        }
        if let started = headerBlockStartedAt, now - started > .init(configuration.headerTimeout) {
            logger.debug("closing connection whose header block did not complete in time")
            session.submitGoAway(errorCode: H2ErrorCode.protocolError)
            flush()
            closeNow(context)
            return
        }
        switch shutdownState {
        case .serving:
            if let idleSince, now - idleSince > .init(configuration.idleTimeout) {
                logger.debug("closing idle connection")
                session.submitGoAway()
                flush()
                closeNow(context)
            }
        case .noticeSent, .goAwaySent:
            advanceShutdown(now: now, context)
        }
    }

    func closeNow(_ context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        if writing {
            closeAfterWrite = true
        } else {
            closeLingering(context)
        }
    }

    /// Ends the connection without losing what was just sent. Closing a socket that still has
    /// unread bytes makes the kernel answer with RST, and a peer's kernel that gets an RST drops
    /// what it has received and not yet read: the answers just written (nginx logged `recv()
    /// failed (104: Connection reset by peer)` for calls a draining replica had answered). So
    /// the output side is shut after the last bytes (FIN), and what still comes in is dropped
    /// until the peer closes too, for at most `lingerTimeout`.
    private func closeLingering(_ context: ChannelHandlerContext) {
        guard !lingering else { return }
        lingering = true
        let channel = context.channel
        let halfClosed = context.eventLoop.makePromise(of: Void.self)
        halfClosed.futureResult.whenFailure { _ in channel.close(promise: nil) }
        context.close(mode: .output, promise: halfClosed)
        context.eventLoop.scheduleTask(in: Self.lingerTimeout) { channel.close(promise: nil) }
    }

    static let lingerTimeout = TimeAmount.seconds(2)
}

@available(*, unavailable)
extension GRPCServerConnection: Sendable {}

// MARK: - nghttp2 events

extension GRPCServerConnection: H2SessionDelegate {
    func sessionBeginHeaders(streamID: Int32) {
        let now = context?.eventLoop.now
        headerBlockStartedAt = now
        if let existing = streams[streamID] {  // request trailers
            headerStream = existing
            return
        }
        let stream = ServerStream(id: streamID, connection: self, maxMessageSize: configuration.maxReceiveMessageSize)
        if let now { stream.startedAt = now }
        streams[streamID] = stream
        headerStream = stream
        idleSince = nil
    }

    func sessionHeader(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        guard let stream = headerStream, stream.id == streamID, case .pending = stream.handler else { return }
        stream.requestHeaders.record(name: name, value: value)
    }

    func sessionHeadersComplete(streamID: Int32, endStream: Bool) {
        headerBlockStartedAt = nil
        let cached = headerStream
        headerStream = nil
        guard let stream = cached?.id == streamID ? cached : streams[streamID] else { return }
        if case .pending = stream.handler {
            start(stream)
        }
        if endStream { sessionEndStream(streamID: streamID) }
    }

    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        guard let stream = streams[streamID], !stream.finished else { return }
        if case .plain = stream.handler {
            gatherPlainBody(bytes, of: stream)
            return
        }
        // Taken out while it runs so a large partial message is never copied on write.
        var deframer = stream.deframer
        stream.deframer = MessageDeframer(maxMessageSize: 0)
        let before = deframer.bufferedBytes
        do {
            try deframer.process(bytes, allocator: context!.channel.allocator) { message in
                deliver(message, to: stream)
            }
        } catch {
            bufferedInboundBytes -= before
            stream.deframer = MessageDeframer(maxMessageSize: 0)
            fail(stream, error.rpcError)
            return
        }
        bufferedInboundBytes += deframer.bufferedBytes - before
        stream.deframer = deframer
        if bufferedInboundBytes > configuration.maxBufferedBytesPerConnection {
            bufferedInboundBytes -= deframer.bufferedBytes
            stream.deframer = MessageDeframer(maxMessageSize: 0)
            fail(stream, RPCError(
                .resourceExhausted,
                "connection holds more than \(configuration.maxBufferedBytesPerConnection) bytes of partial messages"))
        }
    }

    func sessionEndStream(streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        stream.inboundClosed = true
        guard !stream.finished else { return }
        if stream.deframer.hasPartialMessage {
            let buffered = stream.deframer.bufferedBytes
            bufferedInboundBytes -= buffered
            stream.deframer = MessageDeframer(maxMessageSize: 0)
            fail(stream, RPCError(
                .internal, "request stream ended in the middle of a message (\(buffered) bytes of it received)"))
            return
        }
        switch stream.handler {
        case .unary(let method):
            guard let request = stream.unaryRequest else {
                fail(stream, RPCError(.internal, "unary call \(stream.context.path) ended without a request message"))
                return
            }
            stream.unaryRequest = nil
            pendingCalls.append(UnaryCall(request: request, context: stream.context, responder: UnaryResponder(mailbox: mailbox, streamID: streamID)))
            pendingMethods.append(method)
        case .streaming:
            stream.onEnd?()
        case .plain(let method, let path, let headers):
            let body = stream.plainBody ?? ByteBuffer()
            stream.plainBody = nil
            bufferedInboundBytes -= body.readableBytes
            let mailbox = self.mailbox!
            plainHTTP?(PlainHTTPRequest(method: method, path: path, headers: headers, body: body, notes: stream.notes)) { response in
                mailbox.post(.plainResponse(streamID, response))
            }
        case .pending, .rejected:
            break
        }
    }

    private func gatherPlainBody(_ bytes: UnsafeRawBufferPointer, of stream: ServerStream) {
        let held = stream.plainBody?.readableBytes ?? 0
        guard held + bytes.count <= configuration.maxReceiveMessageSize,
            bufferedInboundBytes + bytes.count <= configuration.maxBufferedBytesPerConnection
        else {
            bufferedInboundBytes -= held
            stream.plainBody = nil
            let message = "request body of more than \(configuration.maxReceiveMessageSize) bytes exceeds the limit"
            respond(PlainHTTPResponse(status: 413, headers: [("content-type", "application/json")],
                                      body: ByteBuffer(string: #"{"error":"\#(message)"}"#)), on: stream)
            return
        }
        if stream.plainBody == nil { stream.plainBody = context!.channel.allocator.buffer(capacity: bytes.count) }
        stream.plainBody!.writeBytes(bytes)
        stream.bytesIn += bytes.count
        bufferedInboundBytes += bytes.count
    }

    func sessionStreamClosed(streamID: Int32, errorCode: UInt32) {
        if headerStream?.id == streamID { headerStream = nil }
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        stream.cancelDeadline()
        bufferedInboundBytes -= stream.deframer.bufferedBytes + (stream.plainBody?.readableBytes ?? 0)
        stream.plainBody = nil
        queuedOutboundBytes -= stream.outbound.byteCount
        stream.outbound.removeAll()
        if !stream.finished {
            cancel(stream, RPCError(.cancelled, "client reset the stream (HTTP/2 error code \(errorCode))"))
        }
        releaseCallbacks(stream)
        if streams.isEmpty { idleSince = context?.eventLoop.now }
        drainStreamsIfDue()
        closeIfDrained()
    }

    func sessionGoAway(lastStreamID: Int32, errorCode: UInt32) {
        logger.debug("client sent GOAWAY", metadata: ["lastStreamID": "\(lastStreamID)", "errorCode": "\(errorCode)"])
    }

    func sessionSettingsReceived() {
        receivedSettings = true
    }

    func sessionReadBody(streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> H2Session.ReadResult {
        guard let stream = streams[streamID] else { return .end(0, trailers: nil) }
        let written = stream.outbound.copy(into: buffer)
        queuedOutboundBytes -= written
        if stream.outbound.isEmpty, let trailers = stream.trailers {
            stream.trailers = nil
            return .end(written, trailers: trailers)
        }
        if stream.outbound.isEmpty, stream.endsWithBody {
            return .end(written, trailers: nil)
        }
        if written == 0 {
            stream.bodyDeferred = true
            return .deferred
        }
        return .bytes(written)
    }

    func sessionSentEndStream(streamID: Int32) {
        // The response is complete; a client still sending gets RST_STREAM(NO_ERROR) so it stops.
        if let stream = streams[streamID], !stream.inboundClosed {
            session.resetStream(streamID: streamID, errorCode: H2ErrorCode.noError)
        }
    }

    // MARK: Routing

    private func start(_ stream: ServerStream) {
        let headers = stream.requestHeaders
        stream.requestHeaders = RequestHeaders()
        if recorder != nil {
            stream.path = headers.path
            stream.notes = RequestNotes()
        }
        if !headers.isGRPCContentType, plainHTTP != nil, let path = headers.path, !isGRPCPath(path) {
            // REST over h2c. A gRPC method's path keeps gRPC's own refusals (405, 415).
            var fields = headers.metadata.wireHeaders
            if let type = headers.contentType { fields.append(("content-type", type)) }
            stream.handler = .plain(method: headers.isPOST ? "POST" : headers.method ?? "GET", path: path, headers: fields)
            idleSince = nil
            return
        }
        guard headers.isPOST else {
            reject(stream, httpStatus: "405", RPCError(.internal, "gRPC requires method POST, got \(headers.method ?? "none")"))
            return
        }
        guard headers.isGRPCContentType else {
            // The gRPC spec asks for HTTP 415 so that plain HTTP clients see a failure too.
            reject(stream, httpStatus: "415", RPCError(
                .internal, "invalid content-type '\(headers.contentType ?? "")'; expected application/grpc or application/grpc+proto"))
            return
        }
        if let encoding = headers.encoding, encoding != "identity" {
            reject(stream, RPCError(
                .unimplemented, "message encoding '\(encoding)' is not supported; this server accepts identity"),
                extra: [("grpc-accept-encoding", "identity")])
            return
        }
        if let key = headers.invalidMetadataKey {
            reject(stream, RPCError(.internal, "metadata '\(key)' is not valid base64"))
            return
        }
        var timeoutNanos: Int64?
        if let timeout = headers.timeout {
            guard let nanos = GRPCTimeout.parse(timeout.utf8) else {
                reject(stream, RPCError(.internal, "malformed grpc-timeout '\(timeout)': expected 1-8 digits and a unit (H, M, S, m, u, n)"))
                return
            }
            timeoutNanos = nanos
        }
        guard let path = headers.path, let method = route(path, stream) else { return }

        let deadline = timeoutNanos.map { context!.eventLoop.now + .nanoseconds($0) }
        stream.context = ServerContext(
            path: path, metadata: headers.metadata, deadline: deadline,
            eventLoop: context!.eventLoop, remoteAddress: remoteAddress, notes: stream.notes)
        if let deadline, let timeoutNanos {
            // Cancelled when the stream finishes or closes, which breaks the cycle.
            stream.deadlineTask = context!.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                self.expire(stream, after: timeoutNanos)
            }
        }
        switch method.handler {
        case .unary:
            stream.handler = .unary(method)
        case .streaming(let open):
            stream.handler = .streaming
            open(stream)
            // A stream opened after the others drained (between the GOAWAY notice and the final
            // GOAWAY) is asked to end at once.
            drainStreamsIfDue()
        }
    }

    private func route(_ path: String, _ stream: ServerStream) -> RegisteredMethod? {
        if let handler = router.handler(for: path) { return handler }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].isEmpty, !parts[1].isEmpty, !parts[2].isEmpty else {
            reject(stream, RPCError(.unimplemented, "malformed method path '\(path)': expected /package.Service/Method"))
            return nil
        }
        if router.services.contains(String(parts[1])) {
            reject(stream, RPCError(.unimplemented, "method '\(parts[2])' is not implemented by service '\(parts[1])'"))
        } else {
            reject(stream, RPCError(.unimplemented, "unknown service '\(parts[1])'"))
        }
        return nil
    }

    /// A path naming one of the services served here (`/package.Service/...`).
    private func isGRPCPath(_ path: String) -> Bool {
        if router.handler(for: path) != nil { return true }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 3 && parts[0].isEmpty && router.services.contains(String(parts[1]))
    }

    static func isGRPCContentType(_ value: String) -> Bool {
        let base = value.split(separator: ";", maxSplits: 1).first.map { $0.filter { $0 != " " } } ?? ""
        return base == "application/grpc" || base == "application/grpc+proto"
    }

    private func deliver(_ message: ByteBuffer, to stream: ServerStream) {
        stream.bytesIn += message.readableBytes
        switch stream.handler {
        case .unary:
            if stream.unaryRequest != nil {
                fail(stream, RPCError(.internal, "unary call \(stream.context.path) received more than one request message"))
            } else {
                stream.unaryRequest = message
            }
        case .streaming:
            stream.onMessage?(message)
        case .pending, .rejected, .plain:
            break
        }
    }

    /// Fails a call because of what the client sent: status to the client, cancellation to the handler.
    private func fail(_ stream: ServerStream, _ error: RPCError) {
        guard !stream.finished else { return }
        stream.context?.cancellation.cancel()
        stream.onCancel?(error)
        finish(stream, status: error.status, trailers: error.metadata)
        releaseCallbacks(stream)
    }
}

private func formatNanos(_ nanos: Int64) -> String {
    if nanos % 1_000_000_000 == 0 { return "\(nanos / 1_000_000_000)s" }
    if nanos % 1_000_000 == 0 { return "\(nanos / 1_000_000)ms" }
    if nanos % 1_000 == 0 { return "\(nanos / 1_000)us" }
    return "\(nanos)ns"
}

enum ResponseHeaders {
    static let ok = HeaderBlock(static: [(":status", "200"), ("content-type", "application/grpc")])
    static let okTrailers = HeaderBlock(static: [("grpc-status", "0")])
}

extension RequestHeaders {
    /// Keeps what the server acts on; everything not reserved becomes custom metadata.
    mutating func record(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        func equals(_ literal: StaticString) -> Bool {
            name.elementsEqual(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
        }
        let string = { String(decoding: value, as: UTF8.self) }
        func valueEquals(_ literal: StaticString) -> Bool {
            value.elementsEqual(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
        }
        if name.first == UInt8(ascii: ":") {
            if equals(":path") {
                path = string()
            } else if equals(":method") {
                isPOST = valueEquals("POST")
                if !isPOST { method = string() }
            }
            return
        }
        if equals("content-type") {
            // The exact spellings are compared as bytes; anything else (parameters) the slow way.
            isGRPCContentType = valueEquals("application/grpc") || valueEquals("application/grpc+proto")
            if !isGRPCContentType {
                contentType = string()
                isGRPCContentType = GRPCServerConnection.isGRPCContentType(contentType!)
            }
        } else if equals("grpc-timeout") {
            timeout = string()
        } else if equals("grpc-encoding") {
            encoding = string()
        } else if equals("te") || equals("grpc-accept-encoding") || equals("content-length") {
            return
        } else {
            let key = String(decoding: name, as: UTF8.self)
            if !metadata.addWireHeader(name: key, value: string()) {
                invalidMetadataKey = key
            }
        }
    }
}

import Logging
import MaaSCore
import NIOConcurrencyHelpers
import NIOCore

/// The client side of one HTTP/2 connection: opens a stream per call and turns responses into
/// messages and a final status. Runs on the channel's event loop; ``GRPCClient`` hops to it.
final class GRPCClientConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let configuration: GRPCClientConfiguration
    private var session: H2Session!
    private var context: ChannelHandlerContext?
    private var calls: [Int32: ClientStream] = [:]
    private var inReadCycle = false
    private var closedError: RPCError?
    /// False once the server sent GOAWAY or the connection closed: new calls belong elsewhere.
    let acceptsCalls = NIOLockedValueBox(true)

    init(configuration: GRPCClientConfiguration) {
        self.configuration = configuration
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        session = H2Session(role: .client, delegate: self)
        session.submitSettings([
            (H2SettingID.enablePush, 0),
            (H2SettingID.initialWindowSize, configuration.initialStreamWindow),
            (H2SettingID.noRFC7540Priorities, 1),
        ])
        session.setConnectionWindow(configuration.connectionWindow)
        if context.channel.isActive { flush() }
    }

    func channelActive(context: ChannelHandlerContext) {
        flush()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        inReadCycle = true
        do {
            try bytes.withUnsafeReadableBytes { try session.receive($0) }
        } catch {
            failAll(RPCError(.unavailable, "HTTP/2 protocol error from server: \(error)"))
            flush()
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        inReadCycle = false
        flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { flush() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        acceptsCalls.withLockedValue { $0 = false }
        failAll(RPCError(.unavailable, "connection to server closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(RPCError(.unavailable, "connection error: \(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: RPCError) {
        if closedError == nil { closedError = error }
        let open = calls
        calls.removeAll()
        for call in open.values { call.complete(.failure(error)) }
    }

    private func flush() {
        guard let context, context.channel.isActive else { return }
        do {
            try session.writePending(to: context)
        } catch {
            failAll(RPCError(.internal, "HTTP/2 output failed: \(error)"))
            context.close(promise: nil)
        }
    }

    private func flushSoon() {
        if !inReadCycle { flush() }
    }

    // MARK: Calls

    /// Opens a stream for `call`. Fails the call at once if the connection cannot take it.
    func start(_ call: ClientStream) {
        if let closedError {
            call.complete(.failure(closedError))
            return
        }
        var headers = HeaderBlock()
        headers.add(":method", "POST")
        headers.add(":scheme", configuration.tls == nil ? "http" : "https")
        headers.add(":path", call.path)
        headers.add(":authority", configuration.authority)
        headers.add("content-type", "application/grpc")
        headers.add("te", "trailers")
        headers.add("user-agent", "maas-swift/0.1")
        if let timeout = call.timeoutNanos {
            headers.add("grpc-timeout", GRPCTimeout.encode(nanoseconds: timeout))
        }
        for (name, value) in call.requestMetadata.wireHeaders { headers.add(name, value) }
        guard let id = session.submitRequest(headers: headers) else {
            call.complete(.failure(RPCError(.unavailable, "connection does not accept new calls (GOAWAY received or stream ids exhausted)")))
            return
        }
        call.id = id
        calls[id] = call
        if let timeout = call.timeoutNanos, let context {
            call.deadlineTask = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout)) { [weak self, weak call] in
                guard let self, let call, !call.completed else { return }
                self.session.resetStream(streamID: id, errorCode: H2ErrorCode.cancel)
                self.calls[id] = nil
                call.complete(.failure(RPCError(.deadlineExceeded, "deadline exceeded after \(GRPCTimeout.encode(nanoseconds: timeout))")))
                self.flushSoon()
            }
        }
        flushSoon()
    }

    func send(_ message: ByteBuffer, on call: ClientStream) {
        guard !call.completed, !call.halfClosed, call.id > 0 else { return }
        call.outbound.append(message)
        resume(call)
    }

    func halfClose(_ call: ClientStream) {
        guard !call.completed, !call.halfClosed, call.id > 0 else { return }
        call.halfClosed = true
        resume(call)
    }

    func cancel(_ call: ClientStream, _ error: RPCError) {
        guard !call.completed else { return }
        if call.id > 0 {
            session.resetStream(streamID: call.id, errorCode: H2ErrorCode.cancel)
            calls[call.id] = nil
        }
        call.complete(.failure(error))
        flushSoon()
    }

    private func resume(_ call: ClientStream) {
        if call.bodyDeferred {
            call.bodyDeferred = false
            session.resumeBody(streamID: call.id)
        }
        flushSoon()
    }

    func close() {
        guard let context else { return }
        session.submitGoAway()
        flush()
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension GRPCClientConnection: Sendable {}

extension GRPCClientConnection: H2SessionDelegate {
    func sessionBeginHeaders(streamID: Int32) {}

    func sessionHeader(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        guard let call = calls[streamID] else { return }
        let name = String(decoding: name, as: UTF8.self)
        let value = String(decoding: value, as: UTF8.self)
        switch name {
        case ":status": call.httpStatus = Int(value)
        case "content-type": call.contentType = value
        case "grpc-status": call.grpcStatus = Int32(value)
        case "grpc-message": call.grpcMessage = PercentEncoding.decode(value)
        default:
            guard !Metadata.isReserved(name) else { return }
            if call.receivedHeaders {
                _ = call.trailers.addWireHeader(name: name, value: value)
            } else {
                _ = call.initialMetadata.addWireHeader(name: name, value: value)
            }
        }
    }

    func sessionHeadersComplete(streamID: Int32, endStream: Bool) {
        guard let call = calls[streamID] else { return }
        if !call.receivedHeaders {
            call.receivedHeaders = true
            if call.httpStatus != 200 && call.grpcStatus == nil {
                finish(call, RPCError(Self.code(forHTTPStatus: call.httpStatus), "server answered HTTP status \(call.httpStatus.map(String.init) ?? "none")"))
                return
            }
            if let type = call.contentType, !type.hasPrefix("application/grpc"), call.grpcStatus == nil {
                finish(call, RPCError(.unknown, "server answered content-type '\(type)'"))
                return
            }
            // Trailers-Only: the same block carried the status.
            if endStream || call.grpcStatus != nil {
                call.trailers = call.initialMetadata
                finishWithStatus(call)
            }
            return
        }
        finishWithStatus(call)
    }

    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        guard let call = calls[streamID], !call.completed else { return }
        do {
            try call.deframer.process(bytes, allocator: context!.channel.allocator) { message in
                call.deliver(message)
            }
        } catch {
            let rpcError = error.rpcError
            session.resetStream(streamID: streamID, errorCode: H2ErrorCode.cancel)
            finish(call, rpcError)
        }
    }

    func sessionEndStream(streamID: Int32) {
        guard let call = calls[streamID], !call.completed else { return }
        finish(call, RPCError(.internal, "server ended the stream without trailers"))
    }

    func sessionStreamClosed(streamID: Int32, errorCode: UInt32) {
        guard let call = calls.removeValue(forKey: streamID), !call.completed else { return }
        let error: RPCError
        switch errorCode {
        case H2ErrorCode.refusedStream:
            error = RPCError(.unavailable, RPCError.refusedStreamMessage)
        case H2ErrorCode.cancel:
            error = RPCError(.cancelled, "server cancelled the stream")
        case H2ErrorCode.noError:
            error = RPCError(.internal, "stream closed without a status")
        default:
            error = RPCError(.internal, "server reset the stream (HTTP/2 error code \(errorCode))")
        }
        call.complete(.failure(error))
    }

    func sessionSettingsReceived() {}

    // nghttp2 closes the streams past lastStreamID itself, so each call hears it from
    // sessionStreamClosed; a balancing client stops choosing this connection.
    func sessionGoAway(lastStreamID: Int32, errorCode: UInt32) {
        acceptsCalls.withLockedValue { $0 = false }
    }

    func sessionReadBody(streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> H2Session.ReadResult {
        guard let call = calls[streamID] else { return .end(0, trailers: nil) }
        let written = call.outbound.copy(into: buffer)
        if call.outbound.isEmpty && call.halfClosed { return .end(written, trailers: nil) }
        if written == 0 {
            call.bodyDeferred = true
            return .deferred
        }
        return .bytes(written)
    }

    func sessionSentEndStream(streamID: Int32) {}

    private func finishWithStatus(_ call: ClientStream) {
        guard let code = call.grpcStatus else {
            finish(call, RPCError(.internal, "server sent trailers without grpc-status"))
            return
        }
        if code == 0 {
            calls[call.id] = nil
            call.complete(.success(()))
            return
        }
        finish(call, RPCError(StatusCode(rawValue: code) ?? .unknown, call.grpcMessage ?? "", metadata: call.trailers))
    }

    private func finish(_ call: ClientStream, _ error: RPCError) {
        calls[call.id] = nil
        call.complete(.failure(error))
    }

    /// The gRPC spec's mapping for responses that carry no grpc-status.
    static func code(forHTTPStatus status: Int?) -> StatusCode {
        switch status {
        case 400: .internal
        case 401: .unauthenticated
        case 403: .permissionDenied
        case 404: .unimplemented
        case 429, 502, 503, 504: .unavailable
        default: .unknown
        }
    }
}

/// One call on a client connection, on its event loop.
final class ClientStream {
    let path: String
    let requestMetadata: Metadata
    let timeoutNanos: Int64?
    var id: Int32 = 0
    var outbound = OutboundMessages()
    var halfClosed = false
    var bodyDeferred = false
    var deadlineTask: Scheduled<Void>?

    var receivedHeaders = false
    var httpStatus: Int?
    var contentType: String?
    var grpcStatus: Int32?
    var grpcMessage: String?
    var initialMetadata = Metadata()
    var trailers = Metadata()
    var deframer: MessageDeframer
    private(set) var completed = false

    /// Where messages and the outcome go; set by ``GRPCClient``.
    let onMessage: (ByteBuffer) -> Void
    let onComplete: (Result<Void, RPCError>, _ initialMetadata: Metadata, _ trailers: Metadata) -> Void

    init(
        path: String, metadata: Metadata, timeoutNanos: Int64?, maxMessageSize: Int,
        onMessage: @escaping (ByteBuffer) -> Void,
        onComplete: @escaping (Result<Void, RPCError>, Metadata, Metadata) -> Void
    ) {
        self.path = path
        self.requestMetadata = metadata
        self.timeoutNanos = timeoutNanos
        self.deframer = MessageDeframer(maxMessageSize: maxMessageSize)
        self.onMessage = onMessage
        self.onComplete = onComplete
    }

    func deliver(_ message: ByteBuffer) {
        guard !completed else { return }
        onMessage(message)
    }

    func complete(_ result: Result<Void, RPCError>) {
        guard !completed else { return }
        completed = true
        deadlineTask?.cancel()
        outbound.removeAll()
        onComplete(result, initialMetadata, trailers)
    }
}

import MaaSCore
public import NIOCore
import NIOConcurrencyHelpers
import NIOPosix

/// Settings of a ``GRPCClient`` connection.
public struct GRPCClientConfiguration: Sendable {
    /// Largest response message accepted.
    public var maxReceiveMessageSize = 64 << 20
    /// SETTINGS_INITIAL_WINDOW_SIZE the client advertises.
    public var initialStreamWindow: UInt32 = 4 << 20
    /// The connection-level receive window.
    public var connectionWindow: Int32 = 16 << 20
    /// The `:authority` sent with every call; defaults to `host:port`.
    public var authority = ""
    /// TLS (ALPN `h2`); nil speaks cleartext HTTP/2 (prior knowledge).
    public var tls: ClientTLSConfiguration?
    /// Sent with every call, before the call's own metadata: e.g. `authorization: Bearer …`
    /// for a server with `--auth-tokens`.
    public var metadata: Metadata = [:]

    public init() {}
}

/// The answer to a unary call.
public struct UnaryResponse: Sendable {
    public var message: ByteBuffer
    public var initialMetadata: Metadata
    public var trailers: Metadata
}

/// A gRPC client over one HTTP/2 connection (nghttp2, SwiftNIO). Calls from any task or thread
/// are multiplexed on the connection as concurrent streams.
///
/// ```swift
/// let client = try await GRPCClient.connect(host: "127.0.0.1", port: 8001)
/// defer { client.close() }
/// let reply = try await client.unary(path: "/grpc.health.v1.Health/Check", request: bytes, timeout: .seconds(1))
/// ```
///
/// Failures are thrown as ``RPCError`` with the status code and message the server sent, or
/// UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED when the call could not complete.
public final class GRPCClient: UnaryCaller, Sendable {
    private let channel: any Channel
    private let connection: NIOLoopBound<GRPCClientConnection>
    private let configuration: GRPCClientConfiguration
    private let acceptsCalls: NIOLockedValueBox<Bool>

    private init(channel: any Channel, connection: NIOLoopBound<GRPCClientConnection>, configuration: GRPCClientConfiguration,
                 acceptsCalls: NIOLockedValueBox<Bool>) {
        self.channel = channel
        self.connection = connection
        self.configuration = configuration
        self.acceptsCalls = acceptsCalls
    }

    /// False once the server has sent GOAWAY or the connection has closed: calls started now
    /// would fail, and belong on another connection.
    public var isAcceptingCalls: Bool { acceptsCalls.withLockedValue { $0 } }

    /// Connects to `host:port`, and completes the TLS handshake when the configuration has TLS.
    /// - Throws: ``TLSSetupError`` for unusable TLS files, ``TLSHandshakeError`` when the
    ///   handshake fails, or the connect error.
    public static func connect(
        host: String,
        port: Int,
        configuration: GRPCClientConfiguration = GRPCClientConfiguration(),
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) async throws -> GRPCClient {
        var configuration = configuration
        if configuration.authority.isEmpty { configuration.authority = "\(host):\(port)" }
        let settings = configuration
        let tlsContext = try configuration.tls?.makeContext(applicationProtocols: ["h2"])
        let handshake = NIOLockedValueBox<EventLoopFuture<Void>?>(nil)
        let channel = try await ClientBootstrap(group: eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = settings.tls, let tlsContext {
                        let done = try tls.addHandlers(
                            context: tlsContext, host: host, to: channel.pipeline.syncOperations, eventLoop: channel.eventLoop)
                        handshake.withLockedValue { $0 = done }
                    }
                    try channel.pipeline.syncOperations.addHandler(GRPCClientConnection(configuration: settings))
                }
            }
            .connect(host: host, port: port)
            .get()
        try await ClientTLSConfiguration.awaitHandshake(handshake.withLockedValue { $0 }, on: channel)
        let (connection, acceptsCalls) = try await channel.eventLoop.submit {
            let handler = try channel.pipeline.syncOperations.handler(type: GRPCClientConnection.self)
            return (NIOLoopBound(handler, eventLoop: channel.eventLoop), handler.acceptsCalls)
        }.get()
        return GRPCClient(channel: channel, connection: connection, configuration: configuration, acceptsCalls: acceptsCalls)
    }

    /// Whether the connection is TLS.
    public var isTLS: Bool { configuration.tls != nil }

    /// Sends GOAWAY and closes the connection; open calls fail with UNAVAILABLE.
    public func close() {
        let connection = self.connection
        channel.eventLoop.execute { connection.value.close() }
    }

    /// ``UnaryCaller``: one connection has nowhere else to send a call, idempotent or not.
    public func unary(path: String, request: ByteBuffer, metadata: Metadata, timeout: Duration?, idempotent: Bool) async throws(RPCError) -> UnaryResponse {
        try await unary(path: path, request: request, metadata: metadata, timeout: timeout)
    }

    /// Makes a unary call: one request message, one response message.
    public func unary(
        path: String,
        request: ByteBuffer,
        metadata: Metadata = [:],
        timeout: Duration? = nil
    ) async throws(RPCError) -> UnaryResponse {
        // The request goes out with the headers: one hop to the event loop for the whole call.
        let call = try await open(path: path, metadata: metadata, timeout: timeout, request: request)
        var response: ByteBuffer?
        do {
            for try await message in call.responses {
                guard response == nil else {
                    call.cancel()
                    throw RPCError(.internal, "unary call \(path) received more than one response message")
                }
                response = message
            }
        } catch let error as RPCError {
            throw error
        } catch {
            throw RPCError(.unknown, "\(error)")
        }
        guard let response else {
            throw RPCError(.internal, "unary call \(path) completed without a response message")
        }
        let (initial, trailers) = await call.metadata()
        return UnaryResponse(message: response, initialMetadata: initial, trailers: trailers)
    }

    /// Starts a call of any shape. Send with ``ClientCall/send(_:)``, end the request side with
    /// ``ClientCall/finishSending()``, and read ``ClientCall/responses`` until it ends (OK) or
    /// throws (``RPCError``).
    public func streaming(
        path: String,
        metadata: Metadata = [:],
        timeout: Duration? = nil
    ) async throws(RPCError) -> ClientCall {
        try await open(path: path, metadata: metadata, timeout: timeout, request: nil)
    }

    private func open(
        path: String,
        metadata: Metadata,
        timeout: Duration?,
        request: ByteBuffer?
    ) async throws(RPCError) -> ClientCall {
        let (responses, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        let outcome = CallOutcome()
        let timeoutNanos = timeout.map { duration -> Int64 in
            let (seconds, attoseconds) = duration.components
            let nanos = seconds.multipliedReportingOverflow(by: 1_000_000_000)
            return nanos.overflow ? Int64.max : max(1, nanos.partialValue + attoseconds / 1_000_000_000)
        }
        let connection = self.connection
        let maxMessageSize = configuration.maxReceiveMessageSize
        var metadata = metadata
        if !configuration.metadata.isEmpty {
            var merged = configuration.metadata
            for element in metadata { merged.add(element.key, value: element.value) }
            metadata = merged
        }
        let stream = await withCheckedContinuation { (ready: CheckedContinuation<NIOLoopBound<ClientStream>, Never>) in
            channel.eventLoop.execute {
                let stream = ClientStream(
                    path: path, metadata: metadata, timeoutNanos: timeoutNanos, maxMessageSize: maxMessageSize,
                    onMessage: { continuation.yield($0) },
                    onComplete: { result, initial, trailers in
                        outcome.set(initial: initial, trailers: trailers)
                        switch result {
                        case .success: continuation.finish()
                        case .failure(let error): continuation.finish(throwing: error)
                        }
                    })
                connection.value.start(stream)
                if let request {
                    connection.value.send(request, on: stream)
                    connection.value.halfClose(stream)
                }
                ready.resume(returning: NIOLoopBound(stream, eventLoop: connection.eventLoop))
            }
        }
        let call = ClientCall(connection: connection, stream: stream, responses: responses, outcome: outcome)
        continuation.onTermination = { termination in
            if case .cancelled = termination { call.cancel() }
        }
        return call
    }
}

/// A call in progress. Sendable: send from one task while another reads responses.
public final class ClientCall: Sendable {
    private let connection: NIOLoopBound<GRPCClientConnection>
    private let stream: NIOLoopBound<ClientStream>
    private let outcome: CallOutcome
    /// Response messages; ends when the call ends OK, throws ``RPCError`` otherwise.
    public let responses: AsyncThrowingStream<ByteBuffer, any Error>

    init(
        connection: NIOLoopBound<GRPCClientConnection>,
        stream: NIOLoopBound<ClientStream>,
        responses: AsyncThrowingStream<ByteBuffer, any Error>,
        outcome: CallOutcome
    ) {
        self.connection = connection
        self.stream = stream
        self.responses = responses
        self.outcome = outcome
    }

    /// Queues one request message.
    public func send(_ message: ByteBuffer) {
        let (connection, stream) = (self.connection, self.stream)
        connection.eventLoop.execute { connection.value.send(message, on: stream.value) }
    }

    /// Ends the request side (the server sees END_STREAM).
    public func finishSending() {
        let (connection, stream) = (self.connection, self.stream)
        connection.eventLoop.execute { connection.value.halfClose(stream.value) }
    }

    /// Resets the stream; the call fails with CANCELLED.
    public func cancel() {
        let (connection, stream) = (self.connection, self.stream)
        connection.eventLoop.execute {
            connection.value.cancel(stream.value, RPCError(.cancelled, "call cancelled by the client"))
        }
    }

    /// The response headers' and trailers' metadata, once the call has ended.
    public func metadata() async -> (initial: Metadata, trailers: Metadata) {
        await outcome.wait()
    }
}

/// The metadata of a finished call, for whoever asks after it finished.
final class CallOutcome: Sendable {
    private let state = NIOLockedValueBox<(value: (Metadata, Metadata)?, waiters: [CheckedContinuation<(initial: Metadata, trailers: Metadata), Never>])>((nil, []))

    func set(initial: Metadata, trailers: Metadata) {
        let waiters = state.withLockedValue { state in
            state.value = (initial, trailers)
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: (initial, trailers)) }
    }

    func wait() async -> (initial: Metadata, trailers: Metadata) {
        await withCheckedContinuation { continuation in
            let value = state.withLockedValue { state -> (Metadata, Metadata)? in
                if let value = state.value { return value }
                state.waiters.append(continuation)
                return nil
            }
            if let value { continuation.resume(returning: (value.0, value.1)) }
        }
    }
}

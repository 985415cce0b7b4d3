public import Logging
public import MaaSCore
import NIOConcurrencyHelpers
public import NIOCore
import NIOPosix
public import ServiceLifecycle

/// A gRPC server: HTTP/2 by nghttp2 over SwiftNIO sockets, one event loop per core. Given
/// `http1`, the same port also takes HTTP/1.1: a connection's first bytes decide. Given
/// `plainHTTP`, HTTP/2 requests that are not gRPC go to it. Given `tls`, connections are TLS
/// first (ALPN `h2` or `http/1.1` then decides), and cleartext ones are refused unless
/// ``ServerTLS/allowCleartext``.
///
/// ```swift
/// let server = GRPCServer(host: "127.0.0.1", port: 8001, services: [health], logger: logger)
/// try await ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm], logger: logger).run()
/// ```
///
/// `run()` serves until graceful shutdown is triggered (by the service group or
/// ``beginGracefulShutdown()``): it then stops accepting, sends GOAWAY on every connection, lets
/// in-flight calls finish and asks long-lived streams to end, and returns. If the grace period
/// runs out first, the calls still running are cut (each logged) and it throws
/// ``ShutdownGraceExpired``, so that the process exits non-zero.
public final class GRPCServer: Service, Sendable {
    public let host: String
    public let port: Int
    public let configuration: GRPCServerConfiguration
    private let router: Router
    private let logger: Logger
    private let group: any EventLoopGroup
    /// Adds the HTTP/1.1 handlers to a connection whose first bytes are not the HTTP/2 preface.
    private let http1: (@Sendable (any Channel) throws -> Void)?
    /// Answers HTTP/2 requests that are not gRPC (REST over h2c).
    private let plainHTTP: PlainHTTPHandler?
    /// TLS for every connection (or only those that start with a ClientHello, when cleartext is allowed).
    public let tls: ServerTLS?
    /// Told of every answered call and plain HTTP/2 request (the access log); nil records nothing.
    private let recorder: (any AccessRecorder)?
    private let state = NIOLockedValueBox(State())
    private let accepted = AcceptedChannels()

    private struct State {
        var channel: (any Channel)?
        var address: SocketAddress?
        var addressWaiters: [CheckedContinuation<SocketAddress, any Error>] = []
        var connections: [ObjectIdentifier: NIOLoopBound<GRPCServerConnection>] = [:]
        /// Accepted connections whose first bytes have not decided their protocol yet: shutdown
        /// waits for them too (they become gRPC connections and drain, or close).
        var undecided = Set<ObjectIdentifier>()
        /// HTTP/1.1 connections, told to finish their request and close on shutdown.
        var http1: [ObjectIdentifier: any Channel] = [:]
        var shutdownRequested = false
        var failed: (any Error)?
        /// Calls still running when the shutdown's grace period ran out.
        var cutCalls = 0
    }

    public init(
        host: String,
        port: Int,
        services: [any RPCService],
        configuration: GRPCServerConfiguration = GRPCServerConfiguration(),
        logger: Logger,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        http1: (@Sendable (any Channel) throws -> Void)? = nil,
        plainHTTP: PlainHTTPHandler? = nil,
        tls: ServerTLS? = nil,
        recorder: (any AccessRecorder)? = nil
    ) {
        self.recorder = recorder
        self.http1 = http1
        self.tls = tls
        self.plainHTTP = plainHTTP
        self.host = host
        self.port = port
        self.configuration = configuration
        self.router = Router(services: services)
        self.logger = logger
        self.group = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
    }

    /// The address the server listens on, once bound (useful with port 0).
    public var listeningAddress: SocketAddress {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                state.withLockedValue { state in
                    if let address = state.address {
                        continuation.resume(returning: address)
                    } else if let error = state.failed {
                        continuation.resume(throwing: error)
                    } else {
                        state.addressWaiters.append(continuation)
                    }
                }
            }
        }
    }

    /// Connections open now, by protocol: HTTP/2 (gRPC, and REST over h2c), HTTP/1.1, and
    /// accepted ones whose first bytes have not decided yet.
    public var openConnections: (http2: Int, http1: Int, undecided: Int) {
        state.withLockedValue { ($0.connections.count, $0.http1.count, $0.undecided.count) }
    }

    public func run() async throws {
        let channel: any Channel
        do {
            channel = try await bind()
        } catch {
            let waiters = state.withLockedValue { state in
                state.failed = error
                defer { state.addressWaiters = [] }
                return state.addressWaiters
            }
            for waiter in waiters { waiter.resume(throwing: error) }
            throw error
        }
        let address = channel.localAddress!
        let (waiters, stopAtOnce) = state.withLockedValue { state in
            state.channel = channel
            state.address = address
            defer { state.addressWaiters = [] }
            return (state.addressWaiters, state.shutdownRequested)
        }
        for waiter in waiters { waiter.resume(returning: address) }
        var metadata: Logger.Metadata = ["address": "\(address)"]
        if let tls {
            metadata["tls"] = "\(tls.allowCleartext ? "on, cleartext allowed" : "on")"
            metadata["certificate"] = "\(tls.certificate)"
        }
        logger.info("gRPC server listening", metadata: metadata)
        if stopAtOnce { beginGracefulShutdown() }

        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            self.beginGracefulShutdown()
        }
        // The listener is closed. A connection it accepted just before may not have reached the
        // child initializer yet (its registration is a task queued on its event loop), and so
        // is counted nowhere; exiting now would reset it, with its first request unread (nginx:
        // "recv() failed (104)"). Each loop runs what was queued before these no-ops, twice over
        // for the steps registration takes.
        for _ in 0..<2 {
            for loop in group.makeIterator() { try? await loop.submit {}.get() }
        }
        // Wait for the connections to drain.
        while true {
            let open = state.withLockedValue { $0.connections.count + $0.undecided.count + $0.http1.count }
            if open == 0 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let cut = state.withLockedValue { $0.cutCalls }
        guard cut == 0 else {
            let error = ShutdownGraceExpired(gracePeriod: configuration.shutdownGracePeriod, cutCalls: cut)
            logger.error("gRPC server stopped: \(error)")
            throw error
        }
        logger.info("gRPC server stopped")
    }

    /// Stops accepting connections and drains the open ones (GOAWAY, then close when idle).
    public func beginGracefulShutdown() {
        let (channel, connections, http1) = state.withLockedValue { state in
            state.shutdownRequested = true
            return (state.channel, Array(state.connections.values), Array(state.http1.values))
        }
        guard let channel else { return }
        logger.info("gRPC server shutting down gracefully", metadata: ["connections": "\(connections.count)"])
        ListenerDrain.close(channel, accepted: accepted, logger: logger)
        for connection in connections {
            connection.eventLoop.execute { connection.value.beginGracefulShutdown() }
        }
        let grace = TimeAmount(configuration.shutdownGracePeriod)
        for connection in http1 {
            connection.pipeline.fireUserInboundEventTriggered(ServerDrainEvent())
            // A request still unanswered when the grace period ends is cut, as gRPC calls are
            // (an idle connection closed at the drain event already).
            connection.eventLoop.scheduleTask(in: grace) { [state, logger] in
                guard connection.isActive else { return }
                logger.warning("HTTP/1.1 request cut: the shutdown grace period ran out",
                               metadata: ["peer": "\(connection.remoteAddress.map { "\($0)" } ?? "?")"])
                state.withLockedValue { $0.cutCalls += 1 }
                connection.close(promise: nil)
            }
        }
    }

    private func bind() async throws -> any Channel {
        let configuration = self.configuration
        let router = self.router
        let logger = self.logger
        let state = self.state
        let accepted = self.accepted
        return try await ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(accepted.listenerHandler()) }
            }
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [http1, plainHTTP, tls, recorder] channel in
                channel.eventLoop.makeCompletedFuture {
                    let id = ObjectIdentifier(channel)
                    // A connection accepted after shutdown began (the listener closes on its own
                    // loop, after the queue's last accepts) is served and drained like the open
                    // ones, not closed: its peer has sent its first request already, and closing
                    // over unread bytes resets the connection, which a balancer that streams
                    // request bodies (nginx's grpc_pass) cannot retry.
                    state.withLockedValue { _ = $0.undecided.insert(id) }
                    channel.closeFuture.whenComplete { _ in _ = state.withLockedValue { $0.undecided.remove(id) } }
                    let sniffer = ProtocolSniffer(
                        timeout: .init(configuration.handshakeTimeout),
                        http2: { context in
                            let connection = GRPCServerConnection(
                                configuration: configuration, router: router, plainHTTP: plainHTTP, recorder: recorder, logger: logger,
                                onClose: { _ = state.withLockedValue { $0.connections.removeValue(forKey: id) } },
                                onCut: { count in state.withLockedValue { $0.cutCalls += count } })
                            let draining = state.withLockedValue { state -> Bool in
                                state.undecided.remove(id)
                                state.connections[id] = NIOLoopBound(connection, eventLoop: channel.eventLoop)
                                return state.shutdownRequested
                            }
                            try context.pipeline.syncOperations.addHandler(connection, position: .after(context.handler))
                            // Shutdown began while the first bytes were on their way: the streams
                            // they open still run, then the connection drains like the others.
                            if draining { context.eventLoop.execute { connection.beginGracefulShutdown() } }
                        },
                        http1: http1.map { install in
                            { _ in
                                let draining = state.withLockedValue { state -> Bool in
                                    state.undecided.remove(id)
                                    state.http1[id] = channel
                                    return state.shutdownRequested
                                }
                                channel.closeFuture.whenComplete { _ in _ = state.withLockedValue { $0.http1.removeValue(forKey: id) } }
                                try install(channel)
                                if draining { channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(ServerDrainEvent()) } }
                            }
                        })
                    try channel.pipeline.syncOperations.addHandler(accepted.childHandler())
                    // TLS (or the first byte's choice between TLS and cleartext) comes next; the
                    // sniffer's deadline covers the handshake too.
                    if let tls { try channel.pipeline.syncOperations.addHandler(TLSSniffer(tls: tls)) }
                    try channel.pipeline.syncOperations.addHandler(sniffer)
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// Thrown by ``GRPCServer/run()`` when its shutdown's grace period ran out with calls running.
public struct ShutdownGraceExpired: Error, CustomStringConvertible {
    public let gracePeriod: Duration
    public let cutCalls: Int

    public var description: String {
        let seconds = gracePeriod.inSeconds
        let grace = seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\(seconds) s"
        return "the shutdown grace period (\(grace)) ran out: \(cutCalls) call\(cutCalls == 1 ? " was" : "s were") cut (each is logged above)"
    }
}

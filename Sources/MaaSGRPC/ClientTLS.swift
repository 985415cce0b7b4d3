package import NIOCore
package import NIOSSL
import NIOTLS

/// TLS for a client connection (``GRPCClient``, and MaaSClient's `RESTClient`): TLS 1.2 or
/// later, the server's certificate checked against `trustRoots` and the host name.
///
/// ```swift
/// var configuration = GRPCClientConfiguration()
/// configuration.tls = ClientTLSConfiguration(trustRoots: "ca.pem")
/// let client = try await GRPCClient.connect(host: "localhost", port: 8001, configuration: configuration)
/// ```
public struct ClientTLSConfiguration: Sendable, Hashable {
    /// PEM file of the CA certificates that may sign the server's certificate; nil trusts the
    /// system's roots.
    public var trustRoots: String?
    /// PEM file of the client certificate (then intermediates), for servers that require one.
    public var certificateChain: String?
    /// PEM file of the client certificate's private key.
    public var privateKey: String?
    /// The name the server's certificate must carry, also sent as SNI. Nil uses the host
    /// connected to; an IP address is checked against the certificate's IP addresses and sends
    /// no SNI.
    public var serverHostname: String?

    public init(trustRoots: String? = nil, certificateChain: String? = nil, privateKey: String? = nil, serverHostname: String? = nil) {
        self.trustRoots = trustRoots
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.serverHostname = serverHostname
    }

    /// Reads the files into a context offering `applicationProtocols` by ALPN.
    /// - Important: reads files: call it off the event loops.
    package func makeContext(applicationProtocols: [String]) throws(TLSSetupError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = applicationProtocols
        if let trustRoots {
            configuration.trustRoots = .certificates(try readPEMCertificates(trustRoots))
        }
        switch (certificateChain, privateKey) {
        case (nil, nil):
            break
        case (let chain?, let key?):
            configuration.certificateChain = try readPEMCertificates(chain).map { .certificate($0) }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw TLSSetupError(.unreadable, path: key, "cannot read a PEM private key: \(error)")
            }
        case (let chain?, nil):
            throw TLSSetupError(.unreadable, path: chain, "a client certificate needs its private key too")
        case (nil, let key?):
            throw TLSSetupError(.noCertificate, path: key, "a client key needs its certificate too")
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError(.rejected, path: privateKey ?? trustRoots ?? "", "cannot make a TLS context: \(error)")
        }
    }

    /// Adds the TLS handler for a connection to `host` to `pipeline`, before the protocol
    /// handlers are added.
    /// - Returns: a future that succeeds when the handshake completes and fails with
    ///   ``TLSHandshakeError`` when it does not.
    package func addHandlers(
        context: NIOSSLContext, host: String, to pipeline: ChannelPipeline.SynchronousOperations, eventLoop: any EventLoop
    ) throws -> EventLoopFuture<Void> {
        let name = serverHostname ?? host
        let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        let handler = try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : name)
        let waiter = HandshakeWaiter(promise: eventLoop.makePromise(), peer: name)
        try pipeline.addHandler(handler)
        try pipeline.addHandler(waiter)
        return waiter.promise.futureResult
    }

    /// Waits for the handshake that ``addHandlers(context:host:to:eventLoop:)`` started, if one
    /// did; a failed one closes `channel` and throws.
    package static func awaitHandshake(_ handshake: EventLoopFuture<Void>?, on channel: any Channel) async throws {
        guard let handshake else { return }
        do {
            try await handshake.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }
}

/// The TLS handshake with the server failed: its certificate was not trusted or did not name
/// the host, it refused ours, or it does not speak TLS.
public struct TLSHandshakeError: Error, Sendable, CustomStringConvertible {
    public var peer: String
    public var message: String

    public var description: String { "TLS handshake with \(peer) failed: \(message)" }
}

/// Completes `promise` with the outcome of the handshake, then leaves the pipeline. A server
/// that does not answer within `timeout` fails it and is closed.
final class HandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    let promise: EventLoopPromise<Void>
    private let peer: String
    private let timeout: TimeAmount
    private var done = false
    private var deadline: Scheduled<Void>?

    init(promise: EventLoopPromise<Void>, peer: String, timeout: TimeAmount = .seconds(10)) {
        self.promise = promise
        self.peer = peer
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let seconds = Double(timeout.nanoseconds) / 1e9
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self, weak context] in
            self?.fail("no answer within \(seconds) s")
            context?.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent, !done {
            done = true
            deadline?.cancel()
            promise.succeed()
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail("\(error)")
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail("the server closed the connection")
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        fail("the connection was torn down")
    }

    private func fail(_ message: String) {
        guard !done else { return }
        done = true
        deadline?.cancel()
        promise.fail(TLSHandshakeError(peer: peer, message: message))
    }
}

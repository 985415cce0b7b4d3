public import MaaSCore
public import NIOCore
import NIOHTTP1

/// The HTTP/1.1 side of the serving port (the first bytes of a connection decided it is not
/// HTTP/2): swift-nio's request decoder, our pipelining, limits and response encoding, and the
/// KServe v2 REST routes; and the same routes for REST over h2c (`HTTPFrontend+H2C.swift`).
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
        /// Largest request head (the bytes of its header names and values, as swift-nio counts
        /// them; the same bound as gRPC's header list); past it the answer is 413 and the
        /// connection closes.
        public var maxHeaderBytes = 16 << 10
        /// The model `POST /predict` runs; nil answers 404 naming the option.
        public var predictModel: String?
        /// What `GET /metrics` serves; nil answers 404.
        public var metrics: MetricsEndpoint?
        /// Tokens and scopes for every route; nil serves everyone.
        public var access: AccessPolicy?
        /// Told of every answered request (`--access-log`); nil records nothing.
        public var accessLog: (any AccessRecorder)?

        public init() {}
    }

    /// Adds the HTTP/1.1 handlers to `channel` (on its event loop).
    public static func install(on channel: any Channel, core: InferenceCore, limits: Limits = Limits()) throws {
        let sync = channel.pipeline.syncOperations
        // A client that half-closes after its requests still gets its answers.
        try channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        let timeouts = ConnectionTimeouts(headTimeout: limits.headerTimeout, idleTimeout: limits.idleTimeout)
        try sync.addHandler(timeouts)
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderListSize = limits.maxHeaderBytes
        decoderLimits.maxHeaderFieldSize = limits.maxHeaderBytes
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: decoderLimits)))
        try sync.addHandler(RESTHandler(
            router: RESTRouter(core: core, predictModel: limits.predictModel, metrics: limits.metrics, access: limits.access), timeouts: timeouts,
            maxBodyBytes: limits.maxBodyBytes, maxHeaderBytes: limits.maxHeaderBytes, maxPipelined: limits.maxPipelined,
            recorder: limits.accessLog))
    }
}

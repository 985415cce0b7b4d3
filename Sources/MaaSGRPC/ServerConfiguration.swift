/// Limits and timeouts of a ``GRPCServer``. The defaults suit a model server on a LAN.
public struct GRPCServerConfiguration: Sendable {
    /// Largest request message accepted, checked on the length prefix before buffering.
    public var maxReceiveMessageSize = 64 << 20
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised to every client.
    public var maxConcurrentStreams: UInt32 = 256
    /// SETTINGS_INITIAL_WINDOW_SIZE: how much each stream may send before we acknowledge.
    public var initialStreamWindow: UInt32 = 4 << 20
    /// The connection-level receive window, raised from HTTP/2's 64 KiB at connection start.
    public var connectionWindow: Int32 = 16 << 20
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    public var maxHeaderListSize: UInt32 = 16 << 10
    /// Bytes of partially received messages one connection may hold across its streams.
    public var maxBufferedBytesPerConnection = 256 << 20
    /// Response bytes one stream may queue while its client does not read; past it the stream
    /// is reset with RESOURCE_EXHAUSTED rather than growing without bound.
    public var maxQueuedBytesPerStream = 128 << 20
    /// The same bound across all streams of one connection.
    public var maxQueuedBytesPerConnection = 256 << 20
    /// A connection must send its preface and SETTINGS within this time.
    public var handshakeTimeout: Duration = .seconds(10)
    /// A header block (HEADERS + CONTINUATION) must complete within this time.
    public var headerTimeout: Duration = .seconds(10)
    /// A connection with no open stream for this long is closed with GOAWAY.
    public var idleTimeout: Duration = .seconds(300)
    /// After the first GOAWAY of a graceful shutdown, how long in-flight calls may take.
    public var shutdownGracePeriod: Duration = .seconds(30)

    public init() {}
}

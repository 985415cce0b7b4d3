import NIOCore

/// The time limits of an HTTP/1.1 connection, in one handler at the socket end (it sees the raw
/// bytes, so a head is timed from its first byte): a request head must arrive whole within
/// `headTimeout` (slowloris clients hold a connection only that long), and a connection with
/// nothing to read for `idleTimeout` and no request in progress is closed. The REST handler
/// tells it directly when a head has arrived and a request has ended (same event loop).
///
/// One timer per connection checks both, every quarter of the shorter limit: arming a timer for
/// each request's head and cancelling it when the head arrives cost more than parsing the head.
final class ConnectionTimeouts: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let headTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var waitingForHead = true
    /// When the first byte of the head being read arrived.
    private var headStartedAt: NIODeadline?
    private var check: Scheduled<Void>?
    private var lastRead = NIODeadline.now()
    /// Whether a request is being read or answered: an idle connection is closed only between requests.
    var isBusy: () -> Bool = { false }

    init(headTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.headTimeout = headTimeout
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastRead = .now()
        scheduleCheck(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        if waitingForHead, headStartedAt == nil { headStartedAt = lastRead }
        context.fireChannelRead(data)
    }

    func headReceived() {
        waitingForHead = false
        headStartedAt = nil
    }

    /// The next bytes start a new head.
    func requestEnded() {
        waitingForHead = true
    }

    private func scheduleCheck(_ context: ChannelHandlerContext) {
        let interval = TimeAmount.nanoseconds(min(headTimeout.nanoseconds, idleTimeout.nanoseconds) / 4)
        check = context.eventLoop.assumeIsolated().scheduleTask(in: interval) { [self] in
            let now = NIODeadline.now()
            if let started = headStartedAt, now - started >= headTimeout {
                context.close(promise: nil)
            } else if now - lastRead >= idleTimeout, !isBusy() {
                context.close(promise: nil)
            } else {
                scheduleCheck(context)
            }
        }
    }
}

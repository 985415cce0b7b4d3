import NIOCore

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

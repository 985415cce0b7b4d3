import Logging
import MaaSCore
import NIOCore

/// Graceful shutdown of one connection: a GOAWAY notice and a PING; the final GOAWAY once the
/// PING comes back (the client has read the notice, so it opens nothing more: a request it sent
/// before is still taken), or a second later if it does not; then the close once every stream
/// has ended or the grace period has run out.
///
/// Long-lived streams (health Watch, ModelStreamInfer) would hold the connection for as long as
/// their clients like, and with it the whole server's exit. So once the connection's other calls
/// (unary, REST over h2c, headers still arriving) have finished, each open stream is asked to end
/// (``ServerStream/onDrain``). Finishing the short calls first keeps a watcher told NOT_SERVING for
/// as long as this replica still works for it, which is what a balancer reading the watch wants.
extension GRPCServerConnection {
    /// Starts a graceful shutdown: GOAWAY now, in-flight calls finish, then the connection closes.
    func beginGracefulShutdown() {
        guard case .serving = shutdownState, let context else { return }
        let now = context.eventLoop.now
        shutdownState = .noticeSent(deadline: now + .init(configuration.shutdownGracePeriod), since: now)
        session.submitShutdownNotice()
        session.submitPing(payload: Self.shutdownPingPayload)
        flush()
        drainStreamsIfDue()
    }

    /// Called by the housekeeping timer once shutdown has begun.
    func advanceShutdown(now: NIODeadline, _ context: ChannelHandlerContext) {
        switch shutdownState {
        case .serving:
            return
        case .noticeSent(_, let since):
            if now - since >= .seconds(1) { sendFinalGoAway() }
        case .goAwaySent(let deadline):
            guard now > deadline else { return }
            let cut = streams.values.filter { !$0.finished }.sorted { $0.id < $1.id }
            for stream in cut {
                logger.warning("call cut: the shutdown grace period ran out", metadata: [
                    "call": "\(describe(stream))", "stream": "\(stream.id)",
                    "running_ms": "\((now - stream.startedAt).nanoseconds / 1_000_000)",
                ])
            }
            if !cut.isEmpty { onCut(cut.count) }
            closeNow(context)
        }
    }

    func sessionPingAcknowledged(payload: UInt64) {
        if payload == Self.shutdownPingPayload, case .noticeSent = shutdownState { sendFinalGoAway() }
    }

    /// The final GOAWAY refuses streams newer than the last one taken.
    private func sendFinalGoAway() {
        guard case .noticeSent(let deadline, _) = shutdownState else { return }
        session.submitGoAway()
        shutdownState = .goAwaySent(deadline: deadline)
        flush()
        closeIfDrained()
    }

    /// "shutdown" in ASCII.
    static let shutdownPingPayload: UInt64 = 0x7368_7574_646f_776e

    /// Asks every open stream to end once nothing else on the connection is running.
    func drainStreamsIfDue() {
        if case .serving = shutdownState { return }
        var due: [ServerStream] = []
        for stream in streams.values where !stream.finished {
            switch stream.handler {
            case .streaming:
                if !stream.drainRequested { due.append(stream) }
            case .pending, .unary, .plain:
                return
            case .rejected:
                continue
            }
        }
        // All marked first: ending one re-enters here through finish().
        for stream in due { stream.drainRequested = true }
        for stream in due.sorted(by: { $0.id < $1.id }) where !stream.finished {
            if let onDrain = stream.onDrain {
                onDrain()
            } else {
                finish(stream, status: RPCStatus(code: .unavailable, message: "server is shutting down"), trailers: [:])
            }
        }
    }

    func closeIfDrained() {
        guard case .goAwaySent = shutdownState, streams.isEmpty, let context else { return }
        closeNow(context)
    }

    /// The method, or what is known of a call whose headers never completed.
    private func describe(_ stream: ServerStream) -> String {
        switch stream.handler {
        case .plain(let method, let path, _): "\(method) \(path)"
        case .unary, .streaming: stream.context?.path ?? "?"
        case .pending: "(request headers incomplete)"
        case .rejected: "(rejected)"
        }
    }
}

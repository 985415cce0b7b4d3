import Logging
import MaaSCore
import NIOCore

/// Graceful shutdown of one connection: a GOAWAY notice, the final GOAWAY one housekeeping tick
/// later, and the close once every stream has ended or the grace period has run out.
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
        shutdownState = .noticeSent(deadline: context.eventLoop.now + .init(configuration.shutdownGracePeriod))
        session.submitShutdownNotice()
        flush()
        drainStreamsIfDue()
    }

    /// Called by the housekeeping timer once shutdown has begun.
    func advanceShutdown(now: NIODeadline, _ context: ChannelHandlerContext) {
        switch shutdownState {
        case .serving:
            return
        case .noticeSent(let deadline):
            // One round trip after the notice, the final GOAWAY refuses anything newer.
            session.submitGoAway()
            shutdownState = .goAwaySent(deadline: deadline)
            flush()
            closeIfDrained()
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

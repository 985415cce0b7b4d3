import NIOCore
import NIOTLS

/// The first handler of every accepted connection (after TLS, when the port has it): its first
/// bytes decide what it speaks. The HTTP/2 client preface goes to nghttp2 (gRPC); anything else
/// to the server's HTTP/1.1 frontend, or is closed when there is none. Over TLS the protocol
/// ALPN negotiated decides (`h2` or `http/1.1`), and the bytes only when the client offered
/// none. Removes itself once it has decided, handing on the bytes it held.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let http2Preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let http2: (ChannelHandlerContext) throws -> Void
    private let http1: ((ChannelHandlerContext) throws -> Void)?
    private let timeout: TimeAmount
    private var held: ByteBuffer?
    private var deadline: Scheduled<Void>?

    /// `http2` and `http1` add the handlers for each protocol after this one.
    init(timeout: TimeAmount, http2: @escaping (ChannelHandlerContext) throws -> Void, http1: ((ChannelHandlerContext) throws -> Void)?) {
        self.timeout = timeout
        self.http2 = http2
        self.http1 = http1
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // A client that connects and sends nothing (or too little to tell) is closed.
        deadline = context.eventLoop.scheduleTask(in: timeout) { [weak context] in context?.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        context.fireUserInboundEventTriggered(event)
        guard case .handshakeCompleted(let negotiated)? = event as? TLSUserEvent else { return }
        switch negotiated {
        case "h2"?: decide(context: context, http2: true)
        case "http/1.1"?: decide(context: context, http2: false)
        default: break  // no ALPN: the first bytes decide
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var held = self.held {
            held.writeBuffer(&bytes)
            self.held = held
        } else {
            held = bytes
        }
        let seen = held!.readableBytesView.prefix(Self.http2Preface.count)
        let isPrefix = seen.elementsEqual(Self.http2Preface.prefix(seen.count))
        if isPrefix && seen.count < Self.http2Preface.count { return }  // wait for the rest
        decide(context: context, http2: isPrefix)
    }

    private func decide(context: ChannelHandlerContext, http2: Bool) {
        do {
            if http2 {
                try self.http2(context)
            } else if let http1 {
                try http1(context)
            } else {
                context.close(promise: nil)
                return
            }
        } catch {
            context.close(promise: nil)
            return
        }
        deadline?.cancel()
        if let first = held {
            held = nil
            context.fireChannelRead(wrapInboundOut(first))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

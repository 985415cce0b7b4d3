import NIOCore
import NIOSSL

/// The first handler of a connection on a TLS port: its first byte tells a TLS record (a
/// ClientHello starts with 0x16, handshake) from cleartext. TLS gets the server's
/// `NIOSSLServerHandler` after this handler; cleartext goes on to the ``ProtocolSniffer`` when
/// the port allows it, and is refused otherwise: an HTTP/1.1 request is answered 400 (saying
/// the port speaks TLS), anything else (such as the h2c preface) is closed. Removes itself
/// once it has decided, handing on the bytes it held.
final class TLSSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// TLS record content type `handshake`: the first byte of every ClientHello.
    static let handshakeRecord: UInt8 = 0x16

    private let tls: ServerTLS

    init(tls: ServerTLS) {
        self.tls = tls
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) else { return }
        if first == Self.handshakeRecord {
            do {
                try context.pipeline.syncOperations.addHandler(tls.makeHandler(), position: .after(context.handler))
            } catch {
                context.close(promise: nil)
                return
            }
        } else if !tls.allowCleartext {
            refuse(context: context, bytes)
            return
        }
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Cleartext on a TLS-only port. curl or a browser sending `GET …` learns why; the h2c
    /// preface (`PRI * …`) and anything else are closed: no cleartext HTTP/2 is spoken here.
    private func refuse(context: ChannelHandlerContext, _ bytes: ByteBuffer) {
        let head = bytes.readableBytesView.prefix(4)
        let isMethod = head.first.map { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) } ?? false
        guard isMethod, !head.elementsEqual(ProtocolSniffer.http2Preface.prefix(head.count)) else {
            context.close(promise: nil)
            return
        }
        let body = "this port speaks TLS: use https:// (or a TLS gRPC channel)\n"
        let reply = "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)"
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: reply)), promise: written)
        written.futureResult.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) }
    }
}

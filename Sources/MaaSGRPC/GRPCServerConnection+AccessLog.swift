import MaaSCore
public import NIOCore
import NIOSSL

// One access record per call or plain request, made when its status is decided (trailers,
// Trailers-Only refusal, plain response, or cancellation). Only called when a recorder is set.
extension GRPCServerConnection {
    func recordAccess(_ stream: ServerStream, status: Int) {
        guard let recorder, let context else { return }
        let method: String?
        let wire: AccessRecord.WireProtocol
        switch stream.handler {
        case .pending:
            return  // headers never completed: no request to speak of
        case .plain(let plainMethod, _, _):
            method = plainMethod
            wire = .http2
        case .unary, .streaming, .rejected:
            method = nil
            wire = .grpc
        }
        recorder.record(AccessRecord(
            wireProtocol: wire, tls: tls, peer: peer, method: method, path: stream.path, status: status,
            bytesIn: stream.bytesIn, bytesOut: stream.bytesOut,
            duration: .nanoseconds((context.eventLoop.now - stream.startedAt).nanoseconds),
            notes: stream.notes?.snapshot ?? RequestNotes.Values()))
    }

    /// A call cut before its answer: the gRPC status it ended with, or 499 (nginx's "client
    /// closed request") for a plain HTTP request, which has no status of its own then.
    func recordCancelled(_ stream: ServerStream, _ error: RPCError) {
        if case .plain = stream.handler {
            recordAccess(stream, status: 499)
        } else {
            recordAccess(stream, status: Int(error.code.rawValue))
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Whether the connection speaks TLS (the server's TLS handler is in the pipeline).
    public var hasTLS: Bool {
        (try? handler(type: NIOSSLServerHandler.self)) != nil
    }
}

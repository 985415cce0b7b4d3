public import MaaSCore
public import NIOCore

/// Everything a handler knows about the call it serves. A value: copy it freely across threads.
/// (One reference inside, so that batches of calls copy cheaply.)
public struct ServerContext: Sendable {
    private final class Storage: Sendable {
        let path: String
        let metadata: Metadata
        let deadline: NIODeadline?
        let cancellation = CancellationSignal()
        let eventLoop: any EventLoop
        let remoteAddress: SocketAddress?
        let notes: RequestNotes?

        init(path: String, metadata: Metadata, deadline: NIODeadline?, eventLoop: any EventLoop, remoteAddress: SocketAddress?, notes: RequestNotes?) {
            self.path = path
            self.metadata = metadata
            self.deadline = deadline
            self.eventLoop = eventLoop
            self.remoteAddress = remoteAddress
            self.notes = notes
        }
    }

    private let storage: Storage

    init(
        path: String, metadata: Metadata, deadline: NIODeadline?, eventLoop: any EventLoop, remoteAddress: SocketAddress?,
        notes: RequestNotes? = nil
    ) {
        storage = Storage(path: path, metadata: metadata, deadline: deadline, eventLoop: eventLoop, remoteAddress: remoteAddress, notes: notes)
    }

    /// `/package.Service/Method`.
    public var path: String { storage.path }
    /// Custom metadata the client sent (`-bin` values decoded).
    public var metadata: Metadata { storage.metadata }
    /// When the client stops waiting, if it said (`grpc-timeout`). The server enforces it.
    public var deadline: NIODeadline? { storage.deadline }
    /// Raised when the result is no longer wanted: deadline passed, stream reset, connection gone.
    public var cancellation: CancellationSignal { storage.cancellation }
    /// The connection's event loop.
    public var eventLoop: any EventLoop { storage.eventLoop }
    public var remoteAddress: SocketAddress? { storage.remoteAddress }
    /// What handlers tell the access log about this call (model, token name); nil when the
    /// server keeps no access log.
    public var notes: RequestNotes? { storage.notes }
}

/// One unary call whose request has fully arrived.
public struct UnaryCall: Sendable {
    public let request: ByteBuffer
    public let context: ServerContext
    public let responder: UnaryResponder
}

/// How a method is served.
public enum MethodHandler: Sendable {
    /// One request, one response. Called on the connection's event loop with every call of this
    /// method whose request completed in the same read cycle, so that work crosses to another
    /// thread once per batch rather than once per call.
    case unary(@Sendable (_ calls: [UnaryCall]) -> Void)
    /// Server, client or bidirectional streaming: called on the event loop when the request
    /// headers arrive. The handler sets the stream's callbacks before it returns.
    case streaming(@Sendable (_ stream: ServerStream) -> Void)
}

/// A gRPC service: a name (`package.Service`) and its methods by name.
public protocol RPCService: Sendable {
    var serviceName: String { get }
    var methods: [String: MethodHandler] { get }
}

/// Answers a unary call from any thread. Completions made off the event loop are carried back
/// to it in batches: one hop for all the completions that are waiting.
public struct UnaryResponder: Sendable {
    let mailbox: ConnectionMailbox
    let streamID: Int32

    public func succeed(_ response: ByteBuffer, trailers: Metadata = [:]) {
        mailbox.post(.unaryResponse(streamID, response, trailers))
    }

    public func fail(_ error: RPCError) {
        mailbox.post(.finish(streamID, error.status, error.metadata))
    }

    /// Answers with what `body` returns, or with the error it throws.
    public func complete(_ body: () throws(RPCError) -> ByteBuffer) {
        do {
            succeed(try body())
        } catch {
            fail(error)
        }
    }
}

/// Sends on a ``ServerStream`` from any thread, in order.
public struct StreamSender: Sendable {
    let mailbox: ConnectionMailbox
    let streamID: Int32

    public func send(_ message: ByteBuffer) {
        mailbox.post(.message(streamID, message))
    }

    public func finish(_ status: RPCStatus = .ok, trailers: Metadata = [:]) {
        mailbox.post(.finish(streamID, status, trailers))
    }

    public func fail(_ error: RPCError) {
        mailbox.post(.finish(streamID, error.status, error.metadata))
    }
}

/// Table of the methods a server answers, by path.
public struct Router: Sendable {
    private var handlers: [String: RegisteredMethod] = [:]
    private(set) var services: Set<String> = []

    public init(services: [any RPCService] = []) {
        for service in services { register(service) }
    }

    public mutating func register(_ service: any RPCService) {
        services.insert(service.serviceName)
        for (method, handler) in service.methods {
            handlers["/\(service.serviceName)/\(method)"] = RegisteredMethod(handler)
        }
    }

    func handler(for path: String) -> RegisteredMethod? { handlers[path] }
}

/// A handler with an identity, so that calls to the same method can be grouped cheaply.
final class RegisteredMethod: Sendable {
    let handler: MethodHandler

    init(_ handler: MethodHandler) {
        self.handler = handler
    }
}

extension MethodHandler {
    /// A unary method written as an async function. Each call runs in its own task, which is
    /// cancelled when the call is (deadline, reset, disconnect); thrown ``RPCError``s reach the
    /// client as they are, anything else as INTERNAL.
    public static func asyncUnary(
        _ body: @escaping @Sendable (_ request: ByteBuffer, _ context: ServerContext) async throws -> ByteBuffer
    ) -> MethodHandler {
        .unary { calls in
            for call in calls {
                let task = Task {
                    do {
                        call.responder.succeed(try await body(call.request, call.context))
                    } catch let error as RPCError {
                        call.responder.fail(error)
                    } catch {
                        call.responder.fail(RPCError(.internal, "\(error)"))
                    }
                }
                call.context.cancellation.onCancel { task.cancel() }
            }
        }
    }
}

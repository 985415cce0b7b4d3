import NIOConcurrencyHelpers
import NIOCore

/// What handlers send back to a connection from other threads.
enum StreamEvent: Sendable {
    case unaryResponse(Int32, ByteBuffer, Metadata)
    case message(Int32, ByteBuffer)
    case finish(Int32, RPCStatus, Metadata)
}

/// Carries completions from any thread to a connection's event loop, one hop per batch: the
/// first event posted schedules a drain, later ones just join the pending list.
final class ConnectionMailbox: Sendable {
    let eventLoop: any EventLoop
    private let pending = NIOLockedValueBox<[StreamEvent]>([])
    private let target: NIOLoopBound<WeakTarget>

    final class WeakTarget {
        weak var connection: GRPCServerConnection?
        init(_ connection: GRPCServerConnection) { self.connection = connection }
    }

    init(eventLoop: any EventLoop, connection: GRPCServerConnection) {
        self.eventLoop = eventLoop
        self.target = NIOLoopBound(WeakTarget(connection), eventLoop: eventLoop)
    }

    func post(_ event: StreamEvent) {
        if eventLoop.inEventLoop {
            target.value.connection?.apply([event])
            return
        }
        let first = pending.withLockedValue { pending in
            pending.append(event)
            return pending.count == 1
        }
        if first {
            eventLoop.execute { self.drain() }
        }
    }

    private func drain() {
        let events = pending.withLockedValue { pending in
            var taken: [StreamEvent] = []
            swap(&taken, &pending)
            return taken
        }
        target.value.connection?.apply(events)
    }
}

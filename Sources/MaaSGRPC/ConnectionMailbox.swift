import NIOConcurrencyHelpers
import NIOCore

/// What handlers send back to a connection from other threads.
enum StreamEvent: Sendable {
    case unaryResponse(Int32, ByteBuffer, Metadata)
    case message(Int32, ByteBuffer)
    case finish(Int32, RPCStatus, Metadata)
    case plainResponse(Int32, PlainHTTPResponse)
}

/// Carries completions from any thread to a connection's event loop, one hop per batch: the
/// first event posted schedules a drain, later ones just join the pending list. Events reach
/// the connection in the order they were posted, whichever thread posted them.
final class ConnectionMailbox: Sendable {
    let eventLoop: any EventLoop
    private let pending = NIOLockedValueBox<[StreamEvent]>([])
    // Strong, and cleared when the connection closes: a weak reference would move the
    // connection's reference counts to a side table and slow every retain on the hot path.
    private let target: NIOLoopBoundBox<GRPCServerConnection?>

    init(eventLoop: any EventLoop, connection: GRPCServerConnection) {
        self.eventLoop = eventLoop
        self.target = NIOLoopBoundBox(connection, eventLoop: eventLoop)
    }

    /// Called on the event loop when the connection closes; later events are dropped.
    func detach() {
        target.value = nil
    }

    func post(_ event: StreamEvent) {
        if eventLoop.inEventLoop {
            // Behind events other threads posted and the loop has not drained yet: applied at
            // once it would overtake them (a stream's end before its last messages).
            let queued = pending.withLockedValue { pending in
                guard !pending.isEmpty else { return false }
                pending.append(event)
                return true
            }
            if !queued { target.value?.apply(event) }
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
        target.value?.apply(events)
    }
}

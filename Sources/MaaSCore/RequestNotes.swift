import Synchronization

/// What the layers serving one request learn about it for the access log: the model it named,
/// the token that let it in, and how long it queued and computed in a batcher. The transport
/// makes one per request only when an access log is on (nil otherwise, so an unlogged request
/// allocates nothing), hands it down with the request, and reads it when the answer goes out.
///
/// Written from the event loop (routing, authentication) and from compute threads (the
/// batcher), read on the event loop after the answer came back: a lock, uncontended.
public final class RequestNotes: Sendable {
    public struct Values: Sendable, Hashable {
        public var model: String?
        /// The version the request asked for, or the one that served it once known.
        public var version: String?
        /// The name of the token that authenticated the request, never the token.
        public var token: String?
        /// Summed over the request's batches (a stream's requests, an embedding's inputs).
        public var queue: Duration?
        public var compute: Duration?

        public init() {}
    }

    private let values = Mutex(Values())

    public init() {}

    public var snapshot: Values { values.withLock { $0 } }

    /// The model and version named (an empty version, "any", is left out).
    public func model(_ name: String, version: String) {
        values.withLock {
            $0.model = name
            $0.version = version.isEmpty ? nil : version
        }
    }

    /// The token's name (``AccessDecision`` knows it; the token itself never reaches here).
    public func token(_ name: String) {
        values.withLock { $0.token = name }
    }

    /// One pass through a batcher: time in its queue, and the forward pass of the batch it ran
    /// in (nil when it never ran: it expired in the queue).
    public func batched(queued: Duration, compute: Duration?) {
        values.withLock {
            $0.queue = ($0.queue ?? .zero) + queued
            if let compute { $0.compute = ($0.compute ?? .zero) + compute }
        }
    }
}

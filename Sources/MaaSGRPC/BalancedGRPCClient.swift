import MaaSCore
public import NIOCore
import NIOConcurrencyHelpers

/// Something that makes unary calls: one connection (``GRPCClient``) or several
/// (``BalancedGRPCClient``).
public protocol UnaryCaller: Sendable {
    /// `idempotent`: the call has no side effects, so sending it again after a failure that the
    /// server may already have seen is safe.
    func unary(path: String, request: ByteBuffer, metadata: Metadata, timeout: Duration?, idempotent: Bool) async throws(RPCError) -> UnaryResponse
}

/// One server of a ``BalancedGRPCClient``.
public struct GRPCEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Unary calls spread over several servers, for service-to-service calls without a balancer in
/// between (gRPC's client-side `round_robin`):
///
/// - each call goes to the next endpoint in turn whose connection is up and has not been told to
///   go away (GOAWAY: the server is draining);
/// - a connection that closes or goes away is replaced in the background, at most as often as
///   gRPC's connection backoff allows (1 s, ×1.6 per failure up to 120 s, ±20 % jitter);
/// - a call that fails before any server can have run it (no connection, or the stream refused
///   after a GOAWAY) goes to the next endpoint, and so does an idempotent call that failed with
///   UNAVAILABLE; other failures are the caller's to see.
///
/// ```swift
/// let client = BalancedGRPCClient(endpoints: [GRPCEndpoint(host: "10.0.0.1", port: 8001), GRPCEndpoint(host: "10.0.0.2", port: 8001)])
/// let inference = InferenceClient(client)
/// ```
public final class BalancedGRPCClient: UnaryCaller {
    public let endpoints: [GRPCEndpoint]
    private let subchannels: [Subchannel]
    private let turn = NIOLockedValueBox(0)

    public init(endpoints: [GRPCEndpoint], configuration: GRPCClientConfiguration = GRPCClientConfiguration()) {
        precondition(!endpoints.isEmpty, "BalancedGRPCClient needs at least one endpoint")
        self.endpoints = endpoints
        subchannels = endpoints.map { Subchannel(endpoint: $0, configuration: configuration) }
    }

    /// Closes every connection; calls in progress fail with UNAVAILABLE.
    public func close() {
        for subchannel in subchannels { subchannel.close() }
    }

    /// How many endpoints have a connection that takes calls now.
    public var readyEndpointCount: Int { subchannels.filter { $0.readyClient() != nil }.count }

    public func unary(
        path: String, request: ByteBuffer, metadata: Metadata = [:], timeout: Duration? = nil, idempotent: Bool = false
    ) async throws(RPCError) -> UnaryResponse {
        var failures: [String] = []
        var tried = Set<Int>()
        while tried.count < subchannels.count {
            guard let (index, client) = await pick(excluding: tried, failures: &failures) else { break }
            tried.insert(index)
            do {
                return try await client.unary(path: path, request: request, metadata: metadata, timeout: timeout)
            } catch {
                // Refused before it ran (the GOAWAY came first) or, for an idempotent call, any
                // UNAVAILABLE: the next endpoint gets it.
                let refused = error.code == .unavailable && (idempotent || error.message == RPCError.refusedStreamMessage)
                guard refused else { throw error }
                failures.append("\(endpoints[index]): \(error.message)")
            }
        }
        throw RPCError(.unavailable, "no server could take the call: " + (failures.isEmpty ? "none reachable" : failures.joined(separator: "; ")))
    }

    /// The next endpoint in turn with a connection that takes calls; when none has one, waits for
    /// a connection to the endpoints not in backoff, in turn.
    private func pick(excluding tried: Set<Int>, failures: inout [String]) async -> (Int, GRPCClient)? {
        let count = subchannels.count
        let start = turn.withLockedValue { $0 }
        let order = (0..<count).map { (start + $0) % count }.filter { !tried.contains($0) }
        for index in order {
            if let client = subchannels[index].readyClient() {
                // The turn passes to the one after it: an endpoint that is out does not give
                // its share to its neighbour alone.
                turn.withLockedValue { $0 = (index + 1) % count }
                return (index, client)
            }
        }
        for index in order {
            switch await subchannels[index].connect() {
            case .success(let client): return (index, client)
            case .failure(let reason): failures.append("\(endpoints[index]): \(reason)")
            }
        }
        return nil
    }
}

/// One endpoint's connection, its replacement, and its backoff.
private final class Subchannel: Sendable {
    let endpoint: GRPCEndpoint
    private let configuration: GRPCClientConfiguration
    private let state = NIOLockedValueBox(State())

    private struct State {
        var client: GRPCClient?
        var connecting: Task<Result<GRPCClient, ConnectFailure>, Never>?
        var failures = 0
        var retryAt = NIODeadline.uptimeNanoseconds(0)
        var lastFailure = ""
        var closed = false
    }

    struct ConnectFailure: Error, CustomStringConvertible {
        var description: String
    }

    init(endpoint: GRPCEndpoint, configuration: GRPCClientConfiguration) {
        self.endpoint = endpoint
        self.configuration = configuration
    }

    /// The connection if it takes calls; otherwise nil, and a replacement starts in the
    /// background when the backoff allows.
    func readyClient() -> GRPCClient? {
        let (client, replace) = state.withLockedValue { state -> (GRPCClient?, Bool) in
            if let client = state.client, client.isAcceptingCalls { return (client, false) }
            return (nil, !state.closed && state.connecting == nil && NIODeadline.now() >= state.retryAt)
        }
        if replace { _ = startConnecting() }
        return client
    }

    /// Waits for a connection: the one being made, or a new one if the backoff allows.
    func connect() async -> Result<GRPCClient, ConnectFailure> {
        let (ready, task, reason) = state.withLockedValue { state -> (GRPCClient?, Task<Result<GRPCClient, ConnectFailure>, Never>?, String) in
            if let client = state.client, client.isAcceptingCalls { return (client, nil, "") }
            return (nil, state.connecting, state.lastFailure)
        }
        if let ready { return .success(ready) }
        if let task { return await task.value }
        guard let started = startConnecting() else {
            return .failure(ConnectFailure(description: reason.isEmpty ? "not connected (backing off)" : "\(reason) (backing off)"))
        }
        return await started.value
    }

    private func startConnecting() -> Task<Result<GRPCClient, ConnectFailure>, Never>? {
        let (endpoint, configuration) = (self.endpoint, self.configuration)
        return state.withLockedValue { state -> Task<Result<GRPCClient, ConnectFailure>, Never>? in
            guard !state.closed, state.connecting == nil, NIODeadline.now() >= state.retryAt else { return state.connecting }
            state.client?.close()
            state.client = nil
            let task = Task { [self] in
                let result: Result<GRPCClient, ConnectFailure>
                do {
                    result = .success(try await GRPCClient.connect(host: endpoint.host, port: endpoint.port, configuration: configuration))
                } catch {
                    result = .failure(ConnectFailure(description: "\(error)"))
                }
                self.finishConnecting(result)
                return result
            }
            state.connecting = task
            return task
        }
    }

    private func finishConnecting(_ result: Result<GRPCClient, ConnectFailure>) {
        let orphan = state.withLockedValue { state -> GRPCClient? in
            state.connecting = nil
            switch result {
            case .success(let client):
                if state.closed { return client }
                state.client = client
                state.failures = 0
            case .failure(let failure):
                state.lastFailure = failure.description
                state.retryAt = .now() + Self.backoff(afterFailures: state.failures)
                state.failures += 1
            }
            return nil
        }
        orphan?.close()
    }

    func close() {
        let client = state.withLockedValue { state -> GRPCClient? in
            state.closed = true
            defer { state.client = nil }
            return state.client
        }
        client?.close()
    }

    /// gRPC's connection backoff (doc/connection-backoff.md): 1 s, ×1.6 per failure, at most
    /// 120 s, ±20 % jitter.
    static func backoff(afterFailures failures: Int) -> TimeAmount {
        var seconds = 1.0
        for _ in 0..<min(failures, 20) { seconds = min(120, seconds * 1.6) }
        return .nanoseconds(Int64(seconds * Double.random(in: 0.8...1.2) * 1e9))
    }
}

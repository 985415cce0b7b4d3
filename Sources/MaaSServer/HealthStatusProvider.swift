public import MaaSProto
import Synchronization

/// The serving status of each service, settable from any module, watchable by the health
/// service. The empty name stands for the server as a whole.
public final class HealthStatusProvider: Sendable {
    public typealias ServingStatus = HealthCheckResponse.ServingStatus

    /// A registration made by ``watch(_:onChange:)``; pass it to ``cancelWatch(_:)``.
    public struct WatchToken: Sendable, Hashable {
        let id: UInt64
    }

    private struct Watcher {
        var service: String
        var onChange: @Sendable (ServingStatus) -> Void
    }

    private struct State {
        var statuses: [String: ServingStatus] = ["": .serving]
        var watchers: [UInt64: Watcher] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// The status of `service`, or nil if no status was ever set for it.
    public func status(of service: String) -> ServingStatus? {
        state.withLock { $0.statuses[service] }
    }

    /// Sets the status of `service` and tells its watchers if it changed.
    public func setStatus(_ status: ServingStatus, for service: String) {
        let notify = state.withLock { state -> [@Sendable (ServingStatus) -> Void] in
            guard state.statuses[service] != status else { return [] }
            state.statuses[service] = status
            return state.watchers.values.filter { $0.service == service }.map(\.onChange)
        }
        for watcher in notify { watcher(status) }
    }

    /// Forgets `service`: watchers see SERVICE_UNKNOWN and Check answers NOT_FOUND.
    public func removeStatus(for service: String) {
        let notify = state.withLock { state -> [@Sendable (ServingStatus) -> Void] in
            guard state.statuses.removeValue(forKey: service) != nil else { return [] }
            return state.watchers.values.filter { $0.service == service }.map(\.onChange)
        }
        for watcher in notify { watcher(.serviceUnknown) }
    }

    /// Marks every service NOT_SERVING, as a server does when it starts shutting down.
    public func markAllNotServing() {
        let services = state.withLock { Array($0.statuses.keys) }
        for service in services { setStatus(.notServing, for: service) }
    }

    /// Calls `onChange` now with the current status (SERVICE_UNKNOWN if none) and again on
    /// every change, until the watch is cancelled.
    public func watch(_ service: String, onChange: @escaping @Sendable (ServingStatus) -> Void) -> WatchToken {
        let (token, current) = state.withLock { state in
            state.nextID += 1
            state.watchers[state.nextID] = Watcher(service: service, onChange: onChange)
            return (WatchToken(id: state.nextID), state.statuses[service] ?? .serviceUnknown)
        }
        onChange(current)
        return token
    }

    public func cancelWatch(_ token: WatchToken) {
        _ = state.withLock { $0.watchers.removeValue(forKey: token.id) }
    }

    /// How many watches are registered; for tests that check none leak.
    public var watcherCountForTesting: Int { state.withLock { $0.watchers.count } }
}

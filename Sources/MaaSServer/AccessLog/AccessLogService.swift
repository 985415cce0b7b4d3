public import Logging
public import ServiceLifecycle
import UnixSignals

/// Re-opens the access log on every SIGHUP (logrotate renames the file, then signals) until
/// graceful shutdown, then writes what is pending and closes it. List it before the server in
/// the service group: groups stop in reverse order, so the server's last answers are logged.
///
/// ```swift
/// let services: [any Service] = [await AccessLogService(log: log, logger: logger), server]
/// ```
public struct AccessLogService: Service {
    public let log: AccessLog
    private let hangups: UnixSignalsSequence
    private let logger: Logger

    /// Traps SIGHUP now, before the server starts, so that a hangup sent once it listens finds
    /// the trap set rather than SIGHUP's default (terminate).
    public init(log: AccessLog, logger: Logger) async {
        self.log = log
        self.logger = logger
        hangups = await UnixSignalsSequence(trapping: .sighup)
    }

    public func run() async throws {
        for await _ in hangups.cancelOnGracefulShutdown() {
            switch await log.reopen() {
            case .success:
                logger.notice("access log reopened", metadata: ["file": "\(log.path)"])
            case .failure(let error):
                logger.error("access log not reopened; lines still go to the previous file", metadata: ["reason": "\(error)"])
            }
        }
        await log.close()
    }
}

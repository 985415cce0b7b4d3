public import Logging
public import MaaSGRPC
public import ServiceLifecycle
import UnixSignals

/// Re-reads a TLS port's certificate and key on every SIGHUP until graceful shutdown. New
/// handshakes present the new pair and open connections keep theirs; a pair that cannot serve
/// is refused with an error log line, and the old one stays.
///
/// ```swift
/// let services: [any Service] = [server, TLSReloadService(tls: tls, logger: logger)]
/// ```
public struct TLSReloadService: Service {
    public let tls: ServerTLS
    private let logger: Logger

    public init(tls: ServerTLS, logger: Logger) {
        self.tls = tls
        self.logger = logger
    }

    public func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        for await _ in hangups.cancelOnGracefulShutdown() {
            do {
                let certificate = try tls.reload()
                logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(certificate)", "file": "\(tls.files.certificateChain)"])
            } catch {
                logger.error(
                    "TLS reload refused, still serving the previous certificate",
                    metadata: ["reason": "\(error)", "certificate": "\(tls.certificate)"])
            }
        }
    }
}

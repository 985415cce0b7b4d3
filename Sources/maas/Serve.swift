import ArgumentParser
import Logging
import MaaSGRPC
import MaaSServer
import ServiceLifecycle
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the gRPC server.",
        discussion: """
            SIGINT or SIGTERM stop it gracefully: health turns NOT_SERVING, every client gets GOAWAY,
            in-flight calls finish, then long-lived streams (health Watch, ModelStreamInfer) finish
            what they hold and end with UNAVAILABLE. Calls still running when --shutdown-grace-secs
            runs out are cut, each logged, and the exit status is 1.
            With --tls-cert and --tls-key the port speaks TLS (1.2+; ALPN h2 for gRPC and REST over
            HTTP/2, http/1.1 for REST); SIGHUP re-reads both files, new handshakes use the new pair,
            and a pair that cannot serve is refused with a log line while the old one stays.
            With --access-log, SIGHUP also re-opens the access log file.
            """
    )

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 8001

    @Option(help: "Largest request message accepted, in bytes.")
    var maxReceiveMessageSize = 64 << 20

    @Option(help: "Model repository: REPO/NAME/[config.json] and REPO/NAME/VERSION/model.onnx. Without it, the built-in 'seed' model is served.")
    var modelRepository: String?

    @Option(help: "none: load everything at start; poll: also re-read the repository; explicit: load only --load-model and RepositoryModelLoad.")
    var modelControlMode = "none"

    @Option(help: "Seconds between repository scans in poll mode.")
    var repositoryPollSecs = 15

    @Option(help: "The model POST /predict runs (default: the built-in 'seed' when no repository is given).")
    var predictModel: String?

    @Option(help: "In explicit mode, a model to load at start (repeatable; * for all).")
    var loadModel: [String] = []

    @Option(help: "Bearer tokens: one 'SHA256HEX NAME SCOPES' line each (scopes among infer, read, admin). Re-read on SIGHUP.")
    var authTokens: String?

    @Flag(help: "With --auth-tokens, health and readiness need a token too.")
    var authHealth = false

    @Flag(help: "With --auth-tokens, GET /metrics needs a token with the read scope.")
    var authMetrics = false
    @Option(help: "PEM certificate chain of the server (enables TLS; needs --tls-key).")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "PEM CA certificates for client certificates: every client must present one (mTLS).")
    var tlsClientCa: String?

    @Flag(help: "With TLS, also take cleartext connections on the same port (the first byte tells them apart).")
    var allowCleartext = false

    @Option(help: "Seconds in-flight calls may take after SIGTERM before they are cut (keep it below the orchestrator's termination grace).")
    var shutdownGraceSecs = 30.0

    @Option(help: "Append one JSON line per request (gRPC and REST) to FILE, '-' for standard output. SIGHUP re-opens it (logrotate).")
    var accessLog: String?

    func validate() throws {
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard tlsCert != nil || (tlsClientCa == nil && !allowCleartext) else {
            throw ValidationError("--tls-client-ca and --allow-cleartext need --tls-cert and --tls-key")
        }
        guard InferenceService.ControlMode(rawValue: modelControlMode) != nil else {
            throw ValidationError("--model-control-mode must be none, poll or explicit, got '\(modelControlMode)'")
        }
        guard shutdownGraceSecs >= 0, shutdownGraceSecs.isFinite else {
            throw ValidationError("--shutdown-grace-secs must be a number of seconds >= 0, got \(shutdownGraceSecs)")
        }
        guard repositoryPollSecs >= 1 else { throw ValidationError("--repository-poll-secs must be >= 1") }
        guard authTokens != nil || (!authHealth && !authMetrics) else {
            throw ValidationError("--auth-health and --auth-metrics need --auth-tokens")
        }
    }

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let logger = global.bootstrapLogging()
        var options = ModelServer.Options()
        options.metricsExporter = PrometheusBackend.bootstrap()
        options.host = host
        options.port = port
        options.modelRepository = modelRepository
        options.controlMode = InferenceService.ControlMode(rawValue: modelControlMode)!
        options.pollInterval = .seconds(repositoryPollSecs)
        options.startupModels = loadModel
        options.http.predictModel = predictModel
        options.grpc.maxReceiveMessageSize = maxReceiveMessageSize
        options.grpc.shutdownGracePeriod = .milliseconds(Int64((shutdownGraceSecs * 1000).rounded()))
        // After the metrics bootstrap: the per-token counters are made with the tokens.
        var reloading: Task<Void, Never>?
        if let authTokens {
            let (tokens, task) = try await TokenStore.reloadingOnHangup(path: authTokens, logger: logger)
            options.auth = AccessPolicy(tokens: tokens, health: authHealth, metrics: authMetrics)
            reloading = task
        }
        defer { reloading?.cancel() }
        if let tlsCert, let tlsKey {
            do {
                options.tls = try ServerTLS(
                    files: ServerTLSFiles(certificateChain: tlsCert, privateKey: tlsKey, clientCA: tlsClientCa),
                    allowCleartext: allowCleartext)
            } catch {
                throw CLIError("TLS: \(error)")
            }
        }
        // After the metrics bootstrap too (its drop counter). Opened now: a path that cannot be
        // written stops the command before it listens.
        var accessLogService: AccessLogService?
        if let accessLog {
            let log: AccessLog
            do {
                log = try AccessLog(path: accessLog, logger: logger)
            } catch {
                throw CLIError("--access-log: \(error)")
            }
            options.accessLog = log
            accessLogService = await AccessLogService(log: log, logger: logger)
        }
        let server = ModelServer(options: options, logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        // Before the server, so it stops after it: the server's last answers are written.
        if let accessLogService { services.append(.init(service: accessLogService)) }
        services.append(.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup))
        // Listed after the server, so it stops first; trapping SIGHUP only when there is TLS.
        if let tls = options.tls { services.append(.init(service: TLSReloadService(tls: tls, logger: logger))) }
        let group = ServiceGroup(
            configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

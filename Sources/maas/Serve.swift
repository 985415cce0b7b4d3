import ArgumentParser
import Logging
import MaaSGRPC
import MaaSServer
import ServiceLifecycle
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the gRPC server.",
        discussion: "SIGINT or SIGTERM stop it gracefully: GOAWAY to every client, in-flight calls finish."
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

    func validate() throws {
        guard InferenceService.ControlMode(rawValue: modelControlMode) != nil else {
            throw ValidationError("--model-control-mode must be none, poll or explicit, got '\(modelControlMode)'")
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
        // After the metrics bootstrap: the per-token counters are made with the tokens.
        var reloading: Task<Void, Never>?
        if let authTokens {
            let tokens = try TokenStore(path: authTokens)
            options.auth = AccessPolicy(tokens: tokens, health: authHealth, metrics: authMetrics)
            let hangups = await UnixSignalsSequence(trapping: .sighup)
            reloading = Task { [logger] in
                for await _ in hangups { tokens.reload(logger: logger) }
            }
        }
        defer { reloading?.cancel() }
        let server = ModelServer(options: options, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}

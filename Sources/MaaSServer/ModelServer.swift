public import Logging
public import MaaSCore
public import MaaSGRPC
public import MaaSModels
import MaaSProto
public import NIOCore
public import ServiceLifecycle

/// The model server: health and `inference.GRPCInferenceService` over a model repository.
/// Models load in the background once it listens; ServerReady and the health status of
/// `inference.GRPCInferenceService` turn true when they have.
public final class ModelServer: Service, Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 8001
        public var modelRepository: String?
        public var controlMode: InferenceService.ControlMode = .none
        /// Poll mode: seconds between repository scans.
        public var pollInterval: Duration = .seconds(15)
        /// Explicit mode: models to load at start ("*" for all).
        public var startupModels: [String] = []
        public var grpc = GRPCServerConfiguration()
        /// TLS on the port (with mTLS when its files name a client CA); nil serves cleartext.
        public var tls: ServerTLS?
        /// HTTP/1.1 on the same port (KServe REST: health, metadata).
        public var http = HTTPFrontend.Limits()
        /// Renders the metrics backend's registry as Prometheus text for `GET /metrics` (the
        /// executable that bootstrapped the backend passes it); nil answers 404 there.
        public var metricsExporter: (@Sendable () -> [UInt8])?
        /// Bearer tokens with scopes on every gRPC method and REST route (`--auth-tokens`);
        /// nil serves everyone.
        public var auth: AccessPolicy?
        /// One record per answered request, gRPC and REST (`--access-log`); nil keeps none, at
        /// no cost per request.
        public var accessLog: (any AccessRecorder)?

        public init() {}
    }

    public static let inferenceServiceName = "inference.GRPCInferenceService"

    public let repository: ModelRepository
    public let health = HealthStatusProvider()
    public let readiness = InferenceService.Readiness()
    public let grpc: GRPCServer
    private let logger: Logger
    private let options: Options

    public init(options: Options, logger: Logger) {
        repository = ModelRepository(
            path: options.modelRepository,
            builtIn: options.modelRepository == nil ? [SeedModel.name: (SeedModel.graph(), nil)] : [:], logger: logger)
        health.setStatus(.notServing, for: Self.inferenceServiceName)
        let inference = InferenceService(repository: repository, readiness: readiness, controlMode: options.controlMode)
        let core = inference.core
        var http = options.http
        if http.predictModel == nil, options.modelRepository == nil { http.predictModel = SeedModel.name }
        let process = options.metricsExporter.map { _ in ProcessMetrics() }
        if let exporter = options.metricsExporter { http.metrics = MetricsEndpoint(exporter: exporter, process: process) }
        http.access = options.auth
        http.accessLog = options.accessLog
        let healthService = HealthService(provider: health)
        let services: [any RPCService] =
            if let policy = options.auth {
                [
                    AuthorizedService(healthService, policy: policy) { _ in .health },
                    AuthorizedService(inference, policy: policy, requirement: InferenceService.requirement(of:)),
                ]
            } else {
                [healthService, inference]
            }
        let grpc = GRPCServer(
            host: options.host, port: options.port,
            services: services,
            configuration: options.grpc, logger: logger,
            http1: { [http] channel in try HTTPFrontend.install(on: channel, core: core, limits: http) },
            plainHTTP: HTTPFrontend.plainHTTPHandler(core: core, limits: http),
            tls: options.tls, recorder: options.accessLog)
        process?.countConnections { [weak grpc] in grpc?.openConnections ?? (0, 0, 0) }
        self.grpc = grpc
        self.logger = logger
        self.options = options
    }

    /// Re-reads the repository until cancelled: new models load, removed ones unload, and a
    /// model whose files changed is reloaded (its new version takes traffic only once compiled
    /// and warmed up; the old one finishes what it has queued).
    static func poll(_ repository: ModelRepository, every interval: Duration, logger: Logger) async {
        var seen: [String: [String]] = [:]
        for name in repository.modelNames() { seen[name] = repository.fingerprint(name) }
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let names = Set(repository.modelNames())
            for name in Set(seen.keys).subtracting(names) {
                await repository.unload(name)
                seen[name] = nil
                logger.info("model removed from the repository: unloaded", metadata: ["model": "\(name)"])
            }
            for name in names.sorted() {
                let print = repository.fingerprint(name)
                guard print != seen[name] else { continue }
                seen[name] = print
                do {
                    let versions = try await repository.load(name)
                    logger.info("model (re)loaded", metadata: ["model": "\(name)", "versions": "\(versions.map(\.version))"])
                } catch {
                    logger.error("model failed to load", metadata: ["model": "\(name)", "reason": "\(error.message)"])
                }
            }
        }
    }

    public var listeningAddress: SocketAddress {
        get async throws { try await grpc.listeningAddress }
    }

    public func run() async throws {
        let (repository, readiness, health, logger, options) = (self.repository, self.readiness, self.health, self.logger, self.options)
        let loading = Task.detached {
            switch options.controlMode {
            case .none, .poll:
                await repository.loadAll()
            case .explicit:
                let names = options.startupModels.contains("*") ? repository.modelNames() : options.startupModels
                for name in names where !Task.isCancelled { _ = try? await repository.load(name) }
            }
            for entry in repository.index() {
                switch entry.state {
                case .ready:
                    logger.info("model ready", metadata: ["model": "\(entry.name)", "version": "\(entry.version)"])
                case .unavailable where entry.reason != "unloaded":
                    logger.error("model failed to load", metadata: ["model": "\(entry.name)", "reason": "\(entry.reason)"])
                case .unavailable, .loading, .unloading:
                    break
                }
            }
            readiness.markReady()
            health.setStatus(.serving, for: Self.inferenceServiceName)
            if options.controlMode == .poll {
                await Self.poll(repository, every: options.pollInterval, logger: logger)
            }
        }
        let served: Result<Void, any Error>
        do {
            try await withGracefulShutdownHandler {
                try await grpc.run()
            } onGracefulShutdown: {
                health.markAllNotServing()
            }
            served = .success(())
        } catch {
            served = .failure(error)
        }
        // The listener is closed and its calls answered: stop loading, then let every batcher
        // finish what it holds before the models go.
        loading.cancel()
        await loading.value
        await repository.unloadAll()
        try served.get()
    }
}

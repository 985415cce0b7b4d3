public import Logging
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
        public var grpc = GRPCServerConfiguration()

        public init() {}
    }

    public static let inferenceServiceName = "inference.GRPCInferenceService"

    public let repository: ModelRepository
    public let health = HealthStatusProvider()
    public let readiness = InferenceService.Readiness()
    public let grpc: GRPCServer
    private let logger: Logger

    public init(options: Options, logger: Logger) {
        repository = ModelRepository(
            path: options.modelRepository,
            builtIn: options.modelRepository == nil ? [SeedModel.name: (SeedModel.graph(), nil)] : [:])
        health.setStatus(.notServing, for: Self.inferenceServiceName)
        grpc = GRPCServer(
            host: options.host, port: options.port,
            services: [HealthService(provider: health), InferenceService(repository: repository, readiness: readiness)],
            configuration: options.grpc, logger: logger)
        self.logger = logger
    }

    public var listeningAddress: SocketAddress {
        get async throws { try await grpc.listeningAddress }
    }

    public func run() async throws {
        let (repository, readiness, health, logger) = (self.repository, self.readiness, self.health, self.logger)
        let loading = Task.detached {
            repository.loadAll()
            for entry in repository.index() {
                if entry.state == .ready {
                    logger.info("model ready", metadata: ["model": "\(entry.name)", "version": "\(entry.version)"])
                } else {
                    logger.error("model failed to load", metadata: ["model": "\(entry.name)", "reason": "\(entry.reason)"])
                }
            }
            readiness.markReady()
            health.setStatus(.serving, for: Self.inferenceServiceName)
        }
        try await withGracefulShutdownHandler {
            try await grpc.run()
        } onGracefulShutdown: {
            health.markAllNotServing()
        }
        loading.cancel()
    }
}

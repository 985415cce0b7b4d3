import ArgumentParser
import Logging
import MaaSGRPC
import MaaSModels
import MaaSProto
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

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let logger = global.bootstrapLogging()
        let health = HealthStatusProvider()
        var configuration = GRPCServerConfiguration()
        configuration.maxReceiveMessageSize = maxReceiveMessageSize
        let repository = ModelRepository(
            path: modelRepository,
            builtIn: modelRepository == nil ? [SeedModel.name: (SeedModel.graph(), nil)] : [:])
        let readiness = InferenceService.Readiness()
        let inferenceServiceName = "inference.GRPCInferenceService"
        health.setStatus(.notServing, for: inferenceServiceName)
        let server = GRPCServer(
            host: host, port: port,
            services: [HealthService(provider: health), InferenceService(repository: repository, readiness: readiness)],
            configuration: configuration,
            logger: logger)
        // Models load while the server already answers health and liveness.
        Task.detached {
            repository.loadAll()
            for entry in repository.index() {
                if entry.state == .ready {
                    logger.info("model ready", metadata: ["model": "\(entry.name)", "version": "\(entry.version)"])
                } else {
                    logger.error("model failed to load", metadata: ["model": "\(entry.name)", "reason": "\(entry.reason)"])
                }
            }
            readiness.markReady()
            health.setStatus(.serving, for: inferenceServiceName)
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await withGracefulShutdownHandler {
            try await group.run()
        } onGracefulShutdown: {
            health.markAllNotServing()
        }
    }
}

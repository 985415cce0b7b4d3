import ArgumentParser
import Glibc
import Logging
import MaaSCore
import MaaSGRPC
import MaaSProto
import MaaSServer
import MaaSTestSupport
import NIOCore
import ServiceLifecycle
import UnixSignals

/// Test-only binary for Tests/interop: a server with the echo and health services, and a client
/// suite that exercises a peer implementing the same echo contract.
@main
struct Interop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maas-interop",
        abstract: "Interop peer for tests: echo + health server, or a client suite.",
        subcommands: [ServeEcho.self, ServeModels.self, ClientSuite.self]
    )
}

struct ServeEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve")

    @Option var port = 0
    @Option var maxReceiveMessageSize = 64 << 20

    func run() async throws {
        var logger = Logger(label: "maas-interop")
        logger.logLevel = .warning
        var configuration = GRPCServerConfiguration()
        configuration.maxReceiveMessageSize = maxReceiveMessageSize
        let health = HealthStatusProvider()
        health.setStatus(.serving, for: "maas.testing.Echo")
        let server = GRPCServer(
            host: "127.0.0.1", port: port,
            services: [HealthService(provider: health), EchoService(), HealthControlService(provider: health)],
            configuration: configuration, logger: logger)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        async let running: Void = group.run()
        let address = try await server.listeningAddress
        // Tests read the port from this line.
        print("listening on \(address.port!)")
        fflush(nil)  // stdout is a pipe in tests: make the line visible now
        try await running
    }
}

/// `maas serve` as tests start it: port 0, the chosen port printed on stdout.
struct ServeModels: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "serve-models")

    @Option var port = 0
    @Option var modelRepository: String?
    @Option var modelControlMode = "none"
    @Option var repositoryPollSecs = 1
    @Option var loadModel: [String] = []

    func run() async throws {
        var logger = Logger(label: "maas-interop")
        logger.logLevel = .warning
        var options = ModelServer.Options()
        options.port = port
        options.modelRepository = modelRepository
        options.controlMode = InferenceService.ControlMode(rawValue: modelControlMode) ?? .none
        options.pollInterval = .seconds(repositoryPollSecs)
        options.startupModels = loadModel
        let server = ModelServer(options: options, logger: logger)
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        async let running: Void = group.run()
        let address = try await server.listeningAddress
        print("listening on \(address.port!)")
        fflush(nil)  // stdout is a pipe in tests: make the line visible now
        try await running
    }
}

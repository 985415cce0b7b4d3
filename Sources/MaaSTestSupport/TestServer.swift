public import Logging
public import MaaSGRPC
import NIOCore

/// A ``GRPCServer`` on 127.0.0.1 and a free port, running in a task, for tests.
public struct TestServer: Sendable {
    public let server: GRPCServer
    public let port: Int
    private let task: Task<Void, any Error>

    /// Starts `services` and waits until the server listens.
    public static func start(
        services: [any RPCService],
        configuration: GRPCServerConfiguration = GRPCServerConfiguration(),
        logger: Logger = Logger(label: "maas.test", factory: { _ in SwiftLogNoOpLogHandler() }),
        tls: ServerTLS? = nil
    ) async throws -> TestServer {
        let server = GRPCServer(
            host: "127.0.0.1", port: 0, services: services, configuration: configuration, logger: logger, tls: tls)
        let task = Task { try await server.run() }
        let address = try await server.listeningAddress
        return TestServer(server: server, port: address.port!, task: task)
    }

    /// Shuts down gracefully and waits until the server has stopped.
    public func stop() async throws {
        server.beginGracefulShutdown()
        try await task.value
    }
}

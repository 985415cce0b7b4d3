import ArgumentParser
import Foundation
import Glibc
import Logging
import MaaSClient
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
        subcommands: [ServeEcho.self, ServeModels.self, ClientSuite.self, KServeInfer.self]
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
        try await runAnnouncingPort(server, listening: { try await server.listeningAddress }, logger: logger)
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
    @Option(help: "Seconds an HTTP/1.1 request head may take to arrive.") var httpHeaderTimeout = 10.0
    @Option(help: "Seconds a connection may wait before deciding its protocol.") var handshakeTimeout = 10.0
    @Option var predictModel: String?
    @Option(help: "Largest gRPC message and HTTP request body, in bytes.") var maxReceiveMessageSize = 64 << 20
    @Option(help: "Bearer tokens file, re-read on SIGHUP.") var authTokens: String?
    @Flag var authHealth = false
    @Flag var authMetrics = false
    @Option(help: "trace, debug, info, notice, warning, error, critical.") var logLevel = "warning"
    @Option(help: "PEM server certificate chain: TLS on the port (SIGHUP re-reads it).") var tlsCert: String?
    @Option(help: "PEM private key of --tls-cert.") var tlsKey: String?
    @Option(help: "PEM CA of client certificates: mTLS.") var tlsClientCa: String?
    @Flag(help: "With TLS, also take cleartext connections.") var allowCleartext = false

    func run() async throws {
        var logger = Logger(label: "maas-interop")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .warning
        var options = ModelServer.Options()
        options.grpc.maxReceiveMessageSize = maxReceiveMessageSize
        options.http.maxBodyBytes = maxReceiveMessageSize
        options.metricsExporter = PrometheusBackend.bootstrap()
        options.http.headerTimeout = .milliseconds(Int64(httpHeaderTimeout * 1000))
        options.grpc.handshakeTimeout = .milliseconds(Int64(handshakeTimeout * 1000))
        options.http.predictModel = predictModel
        options.port = port
        options.modelRepository = modelRepository
        options.controlMode = InferenceService.ControlMode(rawValue: modelControlMode) ?? .none
        options.pollInterval = .seconds(repositoryPollSecs)
        options.startupModels = loadModel
        var reloading: Task<Void, Never>?
        if let authTokens {
            let (tokens, task) = try await TokenStore.reloadingOnHangup(path: authTokens, logger: logger)
            options.auth = AccessPolicy(tokens: tokens, health: authHealth, metrics: authMetrics)
            reloading = task
        }
        defer { reloading?.cancel() }
        if let tlsCert, let tlsKey {
            options.tls = try ServerTLS(
                files: ServerTLSFiles(certificateChain: tlsCert, privateKey: tlsKey, clientCA: tlsClientCa), allowCleartext: allowCleartext)
        }
        let server = ModelServer(options: options, logger: logger)
        try await runAnnouncingPort(
            server, also: options.tls.map { [TLSReloadService(tls: $0, logger: logger)] } ?? [],
            listening: { try await server.listeningAddress }, logger: logger)
    }
}

/// Runs `service` (then `also`) until SIGTERM/SIGINT and prints `listening on PORT` once it
/// listens: tests start these servers on port 0 and read the port from that line.
private func runAnnouncingPort(
    _ service: any Service, also: [any Service] = [], listening: () async throws -> SocketAddress, logger: Logger
) async throws {
    let group = ServiceGroup(services: [service] + also, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    async let running: Void = group.run()
    print("listening on \(try await listening().port!)")
    fflush(nil)  // stdout is a pipe in tests: make the line visible now
    try await running
}

/// Swift's InferenceClient against any KServe v2 server: one ModelInfer with .npy inputs,
/// outputs written as DIR/NAME.npy; a server error is printed as `error: CODE: message`, exit 1.
struct KServeInfer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kserve-infer")

    @Option var port: Int
    @Option var model: String
    @Option var version = ""
    @Option(name: .customLong("input")) var inputs: [String] = []
    @Option var outputDir = "."

    func run() async throws {
        var tensors: [(name: String, tensor: Tensor)] = []
        for argument in inputs {
            let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let bytes = FileManager.default.contents(atPath: parts[1]) else {
                throw ValidationError("--input takes NAME=FILE.npy, got '\(argument)'")
            }
            tensors.append((parts[0], try NPY.decode(Array(bytes), source: parts[1])))
        }
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: port)
        defer { client.close() }
        let inference = InferenceClient(client)
        guard try await inference.isServerReady(timeout: .seconds(10)) else { throw ValidationError("server not ready") }
        do {
            let result = try await inference.infer(model: model, version: version, inputs: tensors, timeout: .seconds(30))
            for (name, tensor) in result.outputs {
                try Data(try NPY.encode(tensor)).write(to: URL(fileURLWithPath: "\(outputDir)/\(name).npy"))
                print("\(name) \(tensor.dataType.kserveName) \(tensor.shape) model_version=\(result.modelVersion)")
            }
        } catch let error as RPCError {
            print("error: \(error.code): \(error.message)")
            throw ExitCode(1)
        }
    }
}

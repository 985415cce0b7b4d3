import ArgumentParser
import Logging
import MaaSClient
import MaaSCore
import MaaSGRPC
import MaaSProto

struct HealthCheck: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Ask a gRPC server for its health (grpc.health.v1.Health/Check); exits 0 when SERVING."
    )

    @Option(help: "Server address.")
    var host = "127.0.0.1"

    @Option(help: "Server port.")
    var port = 8001

    @Option(help: "Service to ask about; empty means the whole server.")
    var service = ""

    @Option(help: "Seconds to wait for the answer.")
    var timeout: Double = 5

    @OptionGroup var tls: TLSClientOptions

    @OptionGroup var token: TokenOptions

    func run() async throws {
        var configuration = GRPCClientConfiguration()
        configuration.tls = tls.configuration
        configuration.metadata = token.metadata
        let client: GRPCClient
        do {
            client = try await GRPCClient.connect(host: host, port: port, configuration: configuration)
        } catch {
            print("error: cannot connect to \(host):\(port): \(error)")
            throw ExitCode(2)
        }
        defer { client.close() }
        do {
            let status = try await HealthClient(client).check(service: service, timeout: .milliseconds(Int64(timeout * 1000)))
            print(status)
            if status != .serving { throw ExitCode(1) }
        } catch let error as RPCError {
            print("error: \(error)")
            throw ExitCode(2)
        }
    }
}

import ArgumentParser
import FoundationEssentials
import Glibc
import MaaSClient
import MaaSCore
import MaaSGRPC
import MaaSProto
import NIOHTTP1

/// `--server HOST:PORT`, shared by the client subcommands.
struct ServerOptions: ParsableArguments {
    @Option(help: "The server, HOST:PORT (gRPC and HTTP share the port). Several, comma-separated (gRPC only): calls go round robin over those that take them, and one that drains or goes away is left out until it is back.")
    var server = "127.0.0.1:8001"

    @Option(help: "Seconds to wait for each answer.")
    var timeout: Double = 60

    @OptionGroup var tls: TLSClientOptions

    @OptionGroup var token: TokenOptions

    func validate() throws {
        _ = try addresses()
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    /// The one server, for the subcommands that talk to one.
    func address() throws -> (host: String, port: Int) {
        let all = try addresses()
        guard all.count == 1 else { throw ValidationError("this command talks to one server; --server lists \(all.count)") }
        return all[0]
    }

    func addresses() throws -> [(host: String, port: Int)] {
        try server.split(separator: ",", omittingEmptySubsequences: false).map { item in
            let item = item.trimmingBlanks()
            guard let colon = item.lastIndex(of: ":"), let port = Int(item[item.index(after: colon)...]), (1...65535).contains(port) else {
                throw ValidationError("--server takes HOST:PORT[,HOST:PORT...], got '\(item)' in '\(server)'")
            }
            var host = String(item[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return (host.isEmpty ? "127.0.0.1" : host, port)
        }
    }

    var duration: Duration { .milliseconds(Int64(timeout * 1000)) }
}

/// `--token-file` or `MAAS_TOKEN`: a bearer token for a server started with `--auth-tokens`.
/// Not a command-line value: `ps` would show it to every user of the machine.
struct TokenOptions: ParsableArguments {
    @Option(help: "File whose first line is the bearer token to send (default: the MAAS_TOKEN environment variable).")
    var tokenFile: String?

    func validate() throws {
        _ = try token()
    }

    /// The token, or nil when neither the file nor MAAS_TOKEN gives one.
    func token() throws -> String? {
        let raw: String
        if let tokenFile {
            guard let bytes = FileManager.default.contents(atPath: tokenFile) else {
                throw ValidationError("--token-file: cannot read '\(tokenFile)'")
            }
            raw = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        } else if let value = getenv("MAAS_TOKEN") {
            raw = String(cString: value)
        } else {
            return nil
        }
        let token = raw.trimmingBlanks()
        let source = tokenFile.map { "--token-file '\($0)'" } ?? "MAAS_TOKEN"
        guard !token.isEmpty else { throw ValidationError("\(source) holds no token") }
        // RFC 6750's b64token: what a bearer token may be made of.
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=")
        guard token.allSatisfy(allowed.contains) else {
            throw ValidationError("\(source): a bearer token is letters, digits and -._~+/= only")
        }
        return token
    }

    /// `authorization: Bearer …` for every gRPC call, or nothing.
    var metadata: Metadata {
        guard let token = try? token() else { return [:] }
        return ["authorization": .string("Bearer \(token)")]
    }

    var headers: HTTPHeaders {
        guard let token = try? token() else { return [:] }
        return ["authorization": "Bearer \(token)"]
    }
}

/// `--tls`, `--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-server-name`: TLS to the server.
struct TLSClientOptions: ParsableArguments {
    @Flag(help: "Connect over TLS, trusting the system's CA certificates (implied by the other --tls options).")
    var tls = false

    @Option(help: "PEM CA certificates that may sign the server's certificate (implies --tls).")
    var tlsCa: String?

    @Option(help: "PEM client certificate, for a server that requires one (mTLS; needs --tls-key).")
    var tlsCert: String?

    @Option(help: "PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "The name the server's certificate must carry, also sent as SNI (default: the host).")
    var tlsServerName: String?

    func validate() throws {
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
    }

    /// Nil when no TLS option is given: cleartext.
    var configuration: ClientTLSConfiguration? {
        guard tls || tlsCa != nil || tlsCert != nil || tlsServerName != nil else { return nil }
        return ClientTLSConfiguration(trustRoots: tlsCa, certificateChain: tlsCert, privateKey: tlsKey, serverHostname: tlsServerName)
    }
}

/// One connection to a KServe v2 server, over gRPC or HTTP/1.1 REST.
enum ServerConnection: Sendable {
    case grpc(GRPCClient)
    /// Several servers, round robin (``BalancedGRPCClient``).
    case balanced(BalancedGRPCClient)
    case rest(RESTClient, host: String, port: Int, tls: ClientTLSConfiguration?)

    static func connect(_ options: ServerOptions, http: Bool) async throws -> ServerConnection {
        let all = try options.addresses()
        let tls = options.tls.configuration
        if all.count > 1 {
            guard !http else { throw CLIError("several servers in --server need gRPC (drop --http)") }
            var configuration = GRPCClientConfiguration()
            configuration.maxReceiveMessageSize = 1 << 30
            configuration.tls = tls
            configuration.metadata = options.token.metadata
            let client = BalancedGRPCClient(endpoints: all.map { GRPCEndpoint(host: $0.host, port: $0.port) }, configuration: configuration)
            // Fails now, as for one server, when none of them answers.
            do {
                _ = try await InferenceClient(client).isServerLive(timeout: options.duration)
            } catch {
                client.close()
                throw CLIError("cannot connect to \(options.server): \(error)")
            }
            return .balanced(client)
        }
        let (host, port) = all[0]
        do {
            if http {
                let client = try await RESTClient.connect(host: host, port: port, tls: tls, headers: options.token.headers)
                return .rest(client, host: host, port: port, tls: tls)
            }
            var configuration = GRPCClientConfiguration()
            configuration.maxReceiveMessageSize = 1 << 30
            configuration.tls = tls
            configuration.metadata = options.token.metadata
            return .grpc(try await GRPCClient.connect(host: host, port: port, configuration: configuration))
        } catch {
            throw CLIError("cannot connect to \(options.server): \(error)")
        }
    }

    var transport: String {
        switch self {
        case .grpc(let client): client.isTLS ? "gRPC (HTTP/2 over TLS)" : "gRPC (HTTP/2)"
        case .balanced(let client): "gRPC (HTTP/2), round robin over \(client.endpoints.count) servers"
        case .rest(_, _, _, let tls): tls == nil ? "KServe REST (HTTP/1.1, binary data)" : "KServe REST (HTTP/1.1 over TLS, binary data)"
        }
    }

    func close() {
        switch self {
        case .grpc(let client): client.close()
        case .balanced(let client): client.close()
        case .rest(let client, _, _, _): client.close()
        }
    }

    func metadata(model: String, version: String, timeout: Duration) async throws -> KServe.ModelMetadata {
        switch self {
        case .grpc(let client): try await InferenceClient(client).metadata(model: model, version: version, timeout: timeout)
        case .balanced(let client): try await InferenceClient(client).metadata(model: model, version: version, timeout: timeout)
        case .rest(let client, _, _, _): try await client.metadata(model: model, version: version, timeout: timeout)
        }
    }

    /// The model's max_batch_size; nil when the server does not say. Over REST, a server
    /// without `GET …/config` is asked over gRPC on the same port (ours serves both there).
    func maxBatchSize(model: String, version: String, timeout: Duration) async -> Int? {
        switch self {
        case .grpc(let client):
            return try? await InferenceClient(client).config(model: model, version: version, timeout: timeout).maxBatchSize
        case .balanced(let client):
            return try? await InferenceClient(client).config(model: model, version: version, timeout: timeout).maxBatchSize
        case .rest(let client, let host, let port, let tls):
            if let size = await client.maxBatchSize(model: model, version: version, timeout: timeout) { return size }
            var configuration = GRPCClientConfiguration()
            configuration.tls = tls
            guard let grpc = try? await GRPCClient.connect(host: host, port: port, configuration: configuration) else { return nil }
            defer { grpc.close() }
            return try? await InferenceClient(grpc).config(model: model, version: version, timeout: .seconds(2)).maxBatchSize
        }
    }

    func infer(model: String, version: String, inputs: [(name: String, tensor: Tensor)], outputs: [String], timeout: Duration) async throws -> InferenceResponse {
        switch self {
        case .grpc(let client):
            try await InferenceClient(client).infer(model: model, version: version, inputs: inputs, outputs: outputs, timeout: timeout)
        case .balanced(let client):
            try await InferenceClient(client).infer(model: model, version: version, inputs: inputs, outputs: outputs, timeout: timeout)
        case .rest(let client, _, _, _):
            try await client.infer(model: model, version: version, inputs: inputs, outputs: outputs, timeout: timeout)
        }
    }
}

/// A failure the client subcommands report as `error: MESSAGE` and exit 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Terminal {
    static func error(_ message: String) {
        stderr("error: \(message)\n")
    }

    /// Unbuffered, as stderr is: progress lines must show while the work runs.
    static func stderr(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }
}

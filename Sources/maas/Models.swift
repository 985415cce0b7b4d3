import ArgumentParser
import FoundationEssentials
import MaaSJSON
import Glibc
import MaaSClient
import MaaSCore
import MaaSGRPC
import MaaSProto

struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running server about its models (gRPC): list, ready, config, stats, load, unload.",
        discussion: """
            Tables for people; --json prints what scripts read, in the shapes of Triton's REST
            API (repository index, model config, model statistics).
            """,
        subcommands: [List.self, Ready.self, Config.self, Stats.self, Load.self, Unload.self],
        defaultSubcommand: List.self
    )

    /// What every `maas models` subcommand takes.
    struct Options: ParsableArguments {
        @OptionGroup var server: ServerOptions

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        /// Runs `body` with an InferenceClient; server errors become `error: CODE: message`, exit 1.
        func withClient(_ body: (InferenceClient) async throws -> Void) async throws {
            let connection: ServerConnection
            do {
                connection = try await ServerConnection.connect(server, http: false)
            } catch {
                Terminal.error("\(error)")
                throw ExitCode(1)
            }
            let inference: InferenceClient
            switch connection {
            case .grpc(let client): inference = InferenceClient(client)
            case .balanced(let client): inference = InferenceClient(client)
            case .rest: return
            }
            defer { connection.close() }
            do {
                try await body(inference)
            } catch let error as ExitCode {
                throw error
            } catch {
                Terminal.error("\(error)")
                throw ExitCode(1)
            }
        }

        func printJSON(_ value: JSONValue) {
            var writer = JSONWriter(indent: 2)
            writer.value(value.sortingKeys())
            print(String(decoding: writer.bytes, as: UTF8.self))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every model in the repository, with version, state and reason (RepositoryIndex).")

        @OptionGroup var options: Options

        @Flag(help: "Only the ready models.")
        var readyOnly = false

        func run() async throws {
            try await options.withClient { client in
                let index = try await client.repositoryIndex(readyOnly: readyOnly, timeout: options.server.duration)
                if options.json {
                    options.printJSON(.array(index.map { ["name": .string($0.name), "version": .string($0.version), "state": .string($0.state), "reason": .string($0.reason)] }))
                } else {
                    print(Table.render(["MODEL", "VERSION", "STATE", "REASON"], index.map { [$0.name, $0.version, $0.state, $0.reason] }))
                }
            }
        }
    }

    struct Ready: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Is MODEL ready (ModelReady)? Without a model: is the server live and ready? Exits 0 when ready, 1 when not.")

        @OptionGroup var options: Options

        @Argument(help: "The model; none asks about the server.")
        var model: String?

        @Option(help: "The model version; empty lets the server choose.")
        var modelVersion = ""

        func run() async throws {
            var ready = false
            try await options.withClient { client in
                let timeout = options.server.duration
                if let model {
                    ready = try await client.isModelReady(model, version: modelVersion, timeout: timeout)
                    if options.json {
                        options.printJSON(["name": .string(model), "version": .string(modelVersion), "ready": .bool(ready)])
                    } else {
                        print("\(model)\(modelVersion.isEmpty ? "" : " version \(modelVersion)"): \(ready ? "ready" : "not ready")")
                    }
                } else {
                    let live = try await client.isServerLive(timeout: timeout)
                    ready = try await client.isServerReady(timeout: timeout)
                    if options.json {
                        options.printJSON(["live": .bool(live), "ready": .bool(ready)])
                    } else {
                        print("server: \(live ? "live" : "not live"), \(ready ? "ready" : "not ready")")
                    }
                }
            }
            if !ready { throw ExitCode(1) }
        }
    }

    struct Config: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "MODEL's configuration (ModelConfig): batching, inputs, outputs.")

        @OptionGroup var options: Options

        @Argument(help: "The model.")
        var model: String

        @Option(help: "The model version; empty lets the server choose.")
        var modelVersion = ""

        func run() async throws {
            try await options.withClient { client in
                let config = try await client.config(model: model, version: modelVersion, timeout: options.server.duration)
                if options.json {
                    options.printJSON(Self.json(config))
                    return
                }
                print("model: \(config.name)")
                print("platform: \(config.platform)  backend: \(config.backend)  max_batch_size: \(config.maxBatchSize)  instances: \(config.instanceCount)")
                if let batching = config.dynamicBatching {
                    print("dynamic batching: preferred sizes \(batching.preferredBatchSizes), max queue delay \(batching.maxQueueDelayMicroseconds) µs")
                }
                let rows = config.inputs.map { ["input", $0.name, $0.dataType.modelConfigName, "\($0.dims)"] }
                    + config.outputs.map { ["output", $0.name, $0.dataType.modelConfigName, "\($0.dims)"] }
                print(Table.render(["", "NAME", "DATATYPE", "DIMS"], rows))
                if !config.parameters.isEmpty {
                    print(Table.render(["PARAMETER", "VALUE"], config.parameters.sorted { $0.key < $1.key }.map { [$0.key, $0.value] }))
                }
            }
        }

        /// Triton's JSON form of ModelConfig (what its REST `GET …/config` answers), for the fields we have.
        static func json(_ config: ModelConfig) -> JSONValue {
            func tensors(_ list: [ModelConfig.Tensor]) -> JSONValue {
                .array(list.map { ["name": .string($0.name), "data_type": .string($0.dataType.modelConfigName), "dims": .array($0.dims.map { .int($0) })] })
            }
            let versionPolicy: JSONValue = switch config.versionPolicy {
            case .latest(let count): ["latest": ["num_versions": .int(count)]]
            case .all: ["all": [:]]
            case .specific(let versions): ["specific": ["versions": .array(versions.map { .int($0) })]]
            }
            var members: [(key: String, value: JSONValue)] = [
                ("name", .string(config.name)), ("platform", .string(config.platform)), ("backend", .string(config.backend)),
                ("max_batch_size", .int(config.maxBatchSize)), ("input", tensors(config.inputs)), ("output", tensors(config.outputs)),
                ("instance_group", [["count": .int(config.instanceCount), "kind": "KIND_CPU"]]),
                ("default_model_filename", .string(config.defaultModelFilename)),
                ("parameters", .object(config.parameters.map { (key: $0.key, value: ["string_value": .string($0.value)]) })),
                ("version_policy", versionPolicy),
            ]
            if let batching = config.dynamicBatching {
                members.append(("dynamic_batching", [
                    "preferred_batch_size": .array(batching.preferredBatchSizes.map { .int($0) }),
                    "max_queue_delay_microseconds": .int(batching.maxQueueDelayMicroseconds),
                    "preserve_ordering": .bool(batching.preserveOrdering),
                ]))
            }
            return .object(members)
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Inference statistics (ModelStatistics) of MODEL, or of every model.")

        @OptionGroup var options: Options

        @Argument(help: "The model; none means every model.")
        var model: String?

        @Option(help: "The model version; empty means every version.")
        var modelVersion = ""

        func run() async throws {
            try await options.withClient { client in
                let stats = try await client.statistics(model: model ?? "", version: modelVersion, timeout: options.server.duration)
                if options.json {
                    options.printJSON(["model_stats": .array(stats.map(Self.json))])
                    return
                }
                func average(_ d: KServe.Statistics.Duration) -> String {
                    d.count == 0 ? "-" : cFormat("%.3f", Double(d.nanoseconds) / Double(d.count) / 1e6)
                }
                print(Table.render(
                    ["MODEL", "VERSION", "REQUESTS", "FAILED", "INFERENCES", "EXECUTIONS", "REQUEST ms", "QUEUE ms", "INFER ms"],
                    stats.map { s in
                        [s.name, s.version, "\(s.success.count)", "\(s.fail.count)", "\(s.inferenceCount)", "\(s.executionCount)",
                         average(s.success), average(s.queue), average(s.computeInfer)]
                    }))
            }
        }

        /// Triton's JSON form of one ModelStatistics.
        static func json(_ s: KServe.Statistics) -> JSONValue {
            func duration(_ d: KServe.Statistics.Duration) -> JSONValue { ["count": .int(d.count), "ns": .int(d.nanoseconds)] }
            return [
                "name": .string(s.name), "version": .string(s.version), "last_inference": .int(s.lastInference),
                "inference_count": .int(s.inferenceCount), "execution_count": .int(s.executionCount),
                "inference_stats": [
                    "success": duration(s.success), "fail": duration(s.fail), "queue": duration(s.queue),
                    "compute_input": duration(s.computeInput), "compute_infer": duration(s.computeInfer),
                    "compute_output": duration(s.computeOutput),
                ],
                "batch_stats": .array(s.batches.map { ["batch_size": .int($0.size), "compute_infer": duration($0.computeInfer)] }),
            ]
        }
    }

    struct Load: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Load (or reload) MODEL from the repository (explicit model control mode).")

        @OptionGroup var options: Options

        @Argument(help: "The model.")
        var model: String

        func run() async throws {
            try await control(load: true, model: model, options: options)
        }
    }

    struct Unload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Unload MODEL (explicit model control mode).")

        @OptionGroup var options: Options

        @Argument(help: "The model.")
        var model: String

        func run() async throws {
            try await control(load: false, model: model, options: options)
        }
    }

    /// RepositoryModelLoad or Unload, reported as a line or as `{"name", "loaded"|"unloaded": true}`.
    private static func control(load: Bool, model: String, options: Options) async throws {
        try await options.withClient { client in
            if load {
                try await client.load(model: model, timeout: options.server.duration)
            } else {
                try await client.unload(model: model, timeout: options.server.duration)
            }
            let done = load ? "loaded" : "unloaded"
            if options.json { options.printJSON(.object([("name", .string(model)), (done, .bool(true))])) } else { print("\(model): \(done)") }
        }
    }
}

/// Left-aligned columns, two spaces apart.
enum Table {
    static func render(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell + String(repeating: " ", count: max(0, widths[column] - cell.count))
            }.joined(separator: "  ")
        }.map { line in String(line.reversed().drop { $0 == " " }.reversed()) }.joined(separator: "\n")
    }
}

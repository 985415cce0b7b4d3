import Foundation
import MaaSCompute
import MaaSCore
import MaaSModels
import MaaSProto
import Testing

@Suite("config.json")
struct ConfigTests {
    func parse(_ json: String) throws(InferenceError) -> ModelConfig {
        try ModelConfig.parse(json: Array(json.utf8), modelName: "m")
    }

    @Test("every supported field")
    func full() throws {
        let config = try parse("""
            {"name": "m", "platform": "onnxruntime_onnx", "max_batch_size": 8,
             "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, "4"]}],
             "output": [{"name": "y", "data_type": "TYPE_INT64", "dims": [1]}],
             "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 250,
                                  "default_queue_policy": {"max_queue_size": 3, "default_timeout_microseconds": 1000,
                                                           "allow_timeout_override": true, "timeout_action": "REJECT"}},
             "version_policy": {"specific": {"versions": [1, 3]}},
             "parameters": {"owner": {"string_value": "team-a"}}}
            """)
        #expect(config.parameters == ["owner": "team-a"])
        #expect(config.maxBatchSize == 8)
        #expect(config.inputs == [ModelConfig.Tensor(name: "x", dataType: .float32, dims: [-1, 4])])
        #expect(config.outputs == [ModelConfig.Tensor(name: "y", dataType: .int64, dims: [1])])
        #expect(config.dynamicBatching?.preferredBatchSizes == [4, 8])
        #expect(config.dynamicBatching?.defaultQueuePolicy?.maxQueueSize == 3)
        #expect(config.versionPolicy == .specific([1, 3]))
    }

    @Test("unknown or contradictory configs are refused with a reason", arguments: [
        (#"{"max_batch_sise": 4}"#, "unknown field 'max_batch_sise'"),
        (#"{"name": "other"}"#, "does not match"),
        (#"{"max_batch_size": -1}"#, "out of range"),
        (#"{"dynamic_batching": {}}"#, "needs max_batch_size > 0"),
        (#"{"input": [{"name": "x", "data_type": "FLOAT", "dims": [1]}]}"#, "data_type"),
        (#"{"input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-2]}]}"#, "must be -1 or >= 0"),
        (#"{"version_policy": {"newest": {}}}"#, "unknown version_policy"),
        (#"{"platform": "tensorflow_savedmodel"}"#, "not supported"),
        (#"{"parameters": {"owner": "team-a"}}"#, "'parameters.owner' must be {\"string_value\": \"...\"}"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not valid JSON"),
        (#"{"max_batch_size": 4, "max_batch_size": 8}"#, "field 'max_batch_size' appears twice"),
        (#"{"max_batch_size": 2.5}"#, "'max_batch_size' must be an integer, got 2.5"),
        (#"{"dynamic_batching": [1]}"#, "'dynamic_batching' must be an object, got an array"),
        (#"{"max_batch_size": 4, "dynamic_batching": {"default_queue_policy": {"timeout_action": 1}}}"#, "timeout_action must be REJECT or DELAY, got 1"),
    ])
    func refused(json: String, fragment: String) {
        #expect { try parse(json) } throws: { ($0 as? InferenceError)?.message.contains(fragment) == true }
    }
}

@Suite("Repository, validation and batching")
struct RepositoryTests {
    func repository(config: String? = nil) throws -> (ModelRepository, String) {
        try TestRepository.make(config: config)
    }

    func request(rows: Int, width: Int = 10, datatype: String = "FP32", name: String = "input") -> InferenceRequest {
        InferenceRequest(
            modelName: "seed", inputs: [InferInput(name: name, datatype: datatype, shape: [Int64(rows), Int64(width)])],
            rawInputContents: [[UInt8](repeating: 0, count: rows * width * 4)])
    }

    @Test("a dynamic first dimension means batching; config is completed from the graph")
    func derivedConfig() async throws {
        let (repo, _) = try repository()
        try await repo.load("seed")
        let model = try repo.version("seed", "")
        #expect(model.config.maxBatchSize == 64)
        #expect(model.inputMetadata == [TensorMetadata(name: "input", datatype: "FP32", shape: [-1, 10])])
    }

    @Test("requests are checked before anything is queued", arguments: [
        (2, 10, "FP32", "input", nil as String?),
        (65, 10, "FP32", "input", "batch size 65, allowed 1...64"),
        (1, 9, "FP32", "input", "expects shape [-1, 10], got [1, 9]"),
        (1, 10, "INT64", "input", "expects datatype FP32, got INT64"),
        (1, 10, "FP32", "x", "has no input 'x'"),
    ])
    func validation(rows: Int, width: Int, datatype: String, name: String, error: String?) async throws {
        let (repo, _) = try repository()
        try await repo.load("seed")
        let model = try repo.version("seed", "")
        if let error {
            #expect { try model.prepare(request(rows: rows, width: width, datatype: datatype, name: name)) } throws: {
                ($0 as? InferenceError)?.message.contains(error) == true
            }
        } else {
            #expect(try model.prepare(request(rows: rows)).rows == rows)
        }
    }

    @Test("a config.json that contradicts the model keeps it from loading, with the reason", arguments: [
        (#"{"max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [10]}]}"#, "names input 'x'"),
        (#"{"max_batch_size": 8, "input": [{"name": "input", "data_type": "TYPE_INT64", "dims": [10]}]}"#, "TYPE_INT64 in the config but TYPE_FP32"),
        (#"{"max_batch_size": 8, "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [2, 5]}]}"#, "input 'input' has dims [2, 5] but the model's are [10] besides the batch dimension"),
        (#"{"max_batch_size": 8, "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [12]}]}"#, "input 'input' has dims [12] but the model's are [10]"),
        (#"{"max_batch_size": 8, "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [3]}]}"#, "output 'output' has dims [3] but the model's are [10]"),
        (#"{"max_batch_size": 8, "output": [{"name": "probs", "data_type": "TYPE_FP32", "dims": [10]}]}"#, "names output 'probs'"),
    ])
    func contradictions(config: String, reason: String) async throws {
        let (repo, _) = try repository(config: config)
        await #expect { try await repo.load("seed") } throws: { ($0 as? InferenceError)?.message.contains(reason) == true }
        #expect { try repo.version("seed", "") } throws: { ($0 as? InferenceError)?.code == .unavailable }
        #expect(repo.index().first?.reason.contains(reason) == true)
    }

    @Test("version policy picks the newest versions; a missing model is NOT_FOUND")
    func versions() async throws {
        let (repo, root) = try repository(config: #"{"version_policy": {"latest": {"num_versions": 2}}}"#)
        for version in [2, 3] {
            try FileManager.default.createDirectory(atPath: root + "/seed/\(version)", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: root + "/seed/1/model.onnx", toPath: root + "/seed/\(version)/model.onnx")
        }
        try await repo.load("seed")
        #expect(repo.loadedVersions().map(\.version) == [2, 3])
        #expect(try repo.version("seed", "").version == 3)
        #expect { try repo.version("seed", "1") } throws: { ($0 as? InferenceError)?.code == .notFound }
        #expect { try repo.version("other", "") } throws: { ($0 as? InferenceError)?.code == .notFound }
    }

    /// Found with the onnx fuzz harness: a 66-byte model.onnx declaring a [60000, 60000] input
    /// made the warm-up allocate 14.4 GB of zeros before the plan budget was looked at.
    @Test("a model whose declared input shape is past the plan budget fails its load, without allocating it")
    func hugeDeclaredInputs() async throws {
        let (repo, root) = try repository()
        let graph = ModelGraph(
            inputs: [ValueInfo(name: "x", dataType: .float32, shape: [.fixed(60_000), .fixed(60_000)])],
            outputs: [ValueInfo(name: "y", dataType: .float32, shape: [.fixed(60_000), .fixed(60_000)])],
            nodes: [Node(name: "relu", opType: "Relu", inputs: ["x"], outputs: ["y"])])
        try FileManager.default.createDirectory(atPath: root + "/huge/1", withIntermediateDirectories: true)
        try Data(try ONNXModel.encode(graph)).write(to: URL(fileURLWithPath: root + "/huge/1/model.onnx"))
        await #expect { try await repo.load("huge") } throws: { error in
            let e = error as? InferenceError
            return e?.code == .resourceExhausted && e?.message.contains("failed its warm-up pass") == true
        }
        try await repo.load("seed")
        #expect(repo.loadedVersions().map(\.name) == ["seed"])
    }
}

@Suite("Deploying versions")
struct DeploymentTests {
    func graph(inputs: Int, outputs: Int, metadata: [String: String] = [:]) throws -> ModelGraph {
        ModelGraph(
            opsets: ["": 17],
            inputs: [ValueInfo(name: "input", dataType: .float32, shape: [.symbolic("batch"), .fixed(inputs)])],
            outputs: [ValueInfo(name: "output", dataType: .float32, shape: [.symbolic("batch"), .fixed(outputs)])],
            initializers: ["w": try Tensor([Float](repeating: 0.5, count: inputs * outputs), shape: [outputs, inputs])],
            nodes: [Node(name: "gemm", opType: "Gemm", inputs: ["input", "w"], outputs: ["output"], attributes: ["transB": .int(1)])],
            metadata: metadata)
    }

    @Test func versionsAreNumberedAndServedWithTheirTrainingMetadata() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-\(UUID().uuidString)").path
        let deployment = try RepositoryDeployment(repository: root, model: "m")
        for expected in Int64(1)...3 {
            let g = try graph(inputs: 4, outputs: 2, metadata: ["training.loss": "mse", "other": "x"])
            let (version, path) = try deployment.deploy(g, modelBytes: ONNXModel.encode(g), files: ["notes.txt": Array("v".utf8)])
            #expect(version == expected && path == "\(root)/m/\(expected)/model.onnx")
            #expect(FileManager.default.fileExists(atPath: "\(root)/m/\(expected)/notes.txt"))
        }
        let entries = try FileManager.default.contentsOfDirectory(atPath: root + "/m").sorted()
        #expect(entries == ["1", "2", "3", "config.json"], "no staging directory is left behind")

        let repository = ModelRepository(path: root, pool: ComputePool(threadCount: 1))
        let loaded = try await repository.load("m")
        #expect(loaded.map(\.version) == [3])
        #expect(loaded[0].config.maxBatchSize == 64)
        #expect(loaded[0].config.parameters == ["training.loss": "mse"], "training.* metadata, and only it")

        // A model the existing config.json would not serve is refused before anything is written.
        #expect(throws: InferenceError.invalidModel("config.json of 'm': input 'input' has dims [4] but the model's are [5] besides the batch dimension")) {
            try deployment.check(graph(inputs: 5, outputs: 2))
        }
        #expect(throws: InferenceError.self) { try RepositoryDeployment(repository: root, model: "../escape") }
        #expect(throws: InferenceError.self) { try RepositoryDeployment(repository: "", model: "m") }
    }

    @Test func theConfigsFilenameIsUsedAndSpecificPoliciesAreRefused() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/named", withIntermediateDirectories: true)
        try Data(#"{"default_model_filename": "net.onnx"}"#.utf8).write(to: URL(fileURLWithPath: root + "/named/config.json"))
        let g = try graph(inputs: 3, outputs: 1)
        let (_, path) = try RepositoryDeployment(repository: root, model: "named").deploy(g, modelBytes: ONNXModel.encode(g))
        #expect(path == "\(root)/named/1/net.onnx")
        #expect(try await ModelRepository(path: root, pool: ComputePool(threadCount: 1)).load("named").map(\.version) == [1])

        try FileManager.default.createDirectory(atPath: root + "/pinned", withIntermediateDirectories: true)
        try Data(#"{"version_policy": {"specific": {"versions": [1]}}}"#.utf8).write(to: URL(fileURLWithPath: root + "/pinned/config.json"))
        #expect(throws: InferenceError.invalidModel("\(root)/pinned/config.json serves only versions [1] (version_policy specific); a new version would not be loaded")) {
            try RepositoryDeployment(repository: root, model: "pinned").deploy(g, modelBytes: ONNXModel.encode(g))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/pinned") == ["config.json"])
    }
}

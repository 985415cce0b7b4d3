import Dispatch
import Foundation
import MaaSCompute
import MaaSCore
import MaaSModels
import MaaSProto
import Synchronization
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
    ])
    func refused(json: String, fragment: String) {
        #expect { try parse(json) } throws: { ($0 as? InferenceError)?.message.contains(fragment) == true }
    }
}

@Suite("Repository, validation and batching")
struct RepositoryTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../MaaSComputeTests/Fixtures/onnx").standardized.path

    func repository(_ files: [String: String] = [:], config: String? = nil) throws -> (ModelRepository, String) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("repo-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/seed/1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Self.fixtures + "/seed_mlp.torchscript.op17.onnx", toPath: root + "/seed/1/model.onnx")
        if let config { try config.write(toFile: root + "/seed/config.json", atomically: true, encoding: .utf8) }
        return (ModelRepository(path: root), root)
    }

    func request(rows: Int, width: Int = 10, datatype: String = "FP32", name: String = "input") -> InferenceRequest {
        InferenceRequest(
            modelName: "seed", inputs: [InferInput(name: name, datatype: datatype, shape: [Int64(rows), Int64(width)])],
            rawInputContents: [[UInt8](repeating: 0, count: rows * width * 4)])
    }

    @Test("a dynamic first dimension means batching; config is completed from the graph")
    func derivedConfig() throws {
        let (repo, _) = try repository()
        try repo.load("seed")
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
    func validation(rows: Int, width: Int, datatype: String, name: String, error: String?) throws {
        let (repo, _) = try repository()
        try repo.load("seed")
        let model = try repo.version("seed", "")
        if let error {
            #expect { try model.prepare(request(rows: rows, width: width, datatype: datatype, name: name)) } throws: {
                ($0 as? InferenceError)?.message.contains(error) == true
            }
        } else {
            #expect(try model.prepare(request(rows: rows)).rows == rows)
        }
    }

    @Test("the batcher joins queued requests into one forward pass and splits the outputs")
    func batching() async throws {
        let (repo, _) = try repository(config: #"{"max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 20000}}"#)
        try repo.load("seed")
        let model = try repo.version("seed", "")
        let results = Mutex<[Int: [Int]]>([:])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let remaining = Mutex(5)
            let items = (1...5).map { rows in
                let x = try! Tensor((0..<(rows * 10)).map { Float($0) / 10 }, shape: [rows, 10])
                return BatchItem(inputs: ["input": x], rows: rows, outputs: [], deadline: nil, cancellation: nil) { result in
                    let shape = (try? result.get())?["output"]?.shape ?? []
                    results.withLock { $0[rows] = shape }
                    if remaining.withLock({ $0 -= 1; return $0 }) == 0 { done.resume() }
                }
            }
            model.batcher.submit(items)
        }
        #expect(results.withLock { $0 } == [1: [1, 10], 2: [2, 10], 3: [3, 10], 4: [4, 10], 5: [5, 10]])
        let stats = model.batcher.statistics.snapshot
        #expect(stats.inferenceCount == 15)
        #expect(stats.executionCount == 1)
        #expect(stats.batches[15]?.count == 1)
    }

    @Test("a full queue answers UNAVAILABLE and a passed deadline DEADLINE_EXCEEDED, before compute")
    func queueLimits() async throws {
        let (repo, _) = try repository(config: #"{"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 200000, "default_queue_policy": {"max_queue_size": 1}}}"#)
        try repo.load("seed")
        let model = try repo.version("seed", "")
        let codes = Mutex<[StatusCode]>([])
        let x = try Tensor([Float](repeating: 0, count: 10), shape: [1, 10])
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let remaining = Mutex(2)
            let finish: @Sendable (Result<[String: Tensor], InferenceError>) -> Void = { result in
                if case .failure(let error) = result { codes.withLock { $0.append(error.code) } }
                if remaining.withLock({ $0 -= 1; return $0 }) == 0 { done.resume() }
            }
            // The first waits for the 200 ms batching delay, but its deadline is now.
            model.batcher.submit([
                BatchItem(inputs: ["input": x], rows: 1, outputs: [], deadline: .now + .milliseconds(5), cancellation: nil, complete: finish),
                BatchItem(inputs: ["input": x], rows: 1, outputs: [], deadline: nil, cancellation: nil, complete: finish),
            ])
        }
        #expect(codes.withLock { $0 }.sorted { $0.rawValue < $1.rawValue } == [.deadlineExceeded, .unavailable])
        #expect(model.batcher.statistics.snapshot.executionCount == 0)
    }

    @Test("a request's own queue timeout applies only when the policy allows overriding", arguments: [true, false])
    func timeoutOverride(allowed: Bool) async throws {
        let (repo, _) = try repository(config: """
            {"max_batch_size": 4, "dynamic_batching": {"max_queue_delay_microseconds": 100000,
             "default_queue_policy": {"default_timeout_microseconds": 60000000, "allow_timeout_override": \(allowed)}}}
            """)
        try repo.load("seed")
        let model = try repo.version("seed", "")
        let x = try Tensor([Float](repeating: 0, count: 10), shape: [1, 10])
        let outcome = await withCheckedContinuation { (done: CheckedContinuation<StatusCode, Never>) in
            model.batcher.submit([BatchItem(
                inputs: ["input": x], rows: 1, outputs: [], deadline: nil, cancellation: nil, queueTimeout: .milliseconds(1)
            ) { result in
                switch result {
                case .success: done.resume(returning: .ok)
                case .failure(let error): done.resume(returning: error.code)
                }
            }])
        }
        // Allowed: 1 ms < the 100 ms batching delay, so it times out; otherwise it runs after the delay.
        #expect(outcome == (allowed ? .unavailable : .ok))
    }

    @Test("a config.json that contradicts the model keeps it from loading, with the reason", arguments: [
        (#"{"max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [10]}]}"#, "names input 'x'"),
        (#"{"max_batch_size": 8, "input": [{"name": "input", "data_type": "TYPE_INT64", "dims": [10]}]}"#, "TYPE_INT64 in the config but TYPE_FP32"),
        (#"{"max_batch_size": 8, "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [2, 5]}]}"#, "input 'input' has dims [2, 5] but the model's are [10] besides the batch dimension"),
        (#"{"max_batch_size": 8, "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [12]}]}"#, "input 'input' has dims [12] but the model's are [10]"),
        (#"{"max_batch_size": 8, "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [3]}]}"#, "output 'output' has dims [3] but the model's are [10]"),
        (#"{"max_batch_size": 8, "output": [{"name": "probs", "data_type": "TYPE_FP32", "dims": [10]}]}"#, "names output 'probs'"),
    ])
    func contradictions(config: String, reason: String) throws {
        let (repo, _) = try repository(config: config)
        #expect { try repo.load("seed") } throws: { ($0 as? InferenceError)?.message.contains(reason) == true }
        #expect { try repo.version("seed", "") } throws: { ($0 as? InferenceError)?.code == .unavailable }
        #expect(repo.index().first?.reason.contains(reason) == true)
    }

    @Test("version policy picks the newest versions; a missing model is NOT_FOUND")
    func versions() throws {
        let (repo, root) = try repository(config: #"{"version_policy": {"latest": {"num_versions": 2}}}"#)
        for version in [2, 3] {
            try FileManager.default.createDirectory(atPath: root + "/seed/\(version)", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: root + "/seed/1/model.onnx", toPath: root + "/seed/\(version)/model.onnx")
        }
        try repo.load("seed")
        #expect(repo.loadedVersions().map(\.version) == [2, 3])
        #expect(try repo.version("seed", "").version == 3)
        #expect { try repo.version("seed", "1") } throws: { ($0 as? InferenceError)?.code == .notFound }
        #expect { try repo.version("other", "") } throws: { ($0 as? InferenceError)?.code == .notFound }
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

    @Test func versionsAreNumberedAndServedWithTheirTrainingMetadata() throws {
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
        let loaded = try repository.load("m")
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

    @Test func theConfigsFilenameIsUsedAndSpecificPoliciesAreRefused() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/named", withIntermediateDirectories: true)
        try Data(#"{"default_model_filename": "net.onnx"}"#.utf8).write(to: URL(fileURLWithPath: root + "/named/config.json"))
        let g = try graph(inputs: 3, outputs: 1)
        let (_, path) = try RepositoryDeployment(repository: root, model: "named").deploy(g, modelBytes: ONNXModel.encode(g))
        #expect(path == "\(root)/named/1/net.onnx")
        #expect(try ModelRepository(path: root, pool: ComputePool(threadCount: 1)).load("named").map(\.version) == [1])

        try FileManager.default.createDirectory(atPath: root + "/pinned", withIntermediateDirectories: true)
        try Data(#"{"version_policy": {"specific": {"versions": [1]}}}"#.utf8).write(to: URL(fileURLWithPath: root + "/pinned/config.json"))
        #expect(throws: InferenceError.invalidModel("\(root)/pinned/config.json serves only versions [1] (version_policy specific); a new version would not be loaded")) {
            try RepositoryDeployment(repository: root, model: "pinned").deploy(g, modelBytes: ONNXModel.encode(g))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/pinned") == ["config.json"])
    }
}

import Foundation
import MaaSCompute
import MaaSCore
@testable import MaaSModels
import MaaSProto
import MaaSTestSupport
import Synchronization
import Testing

/// Requests of different lengths in one batch: padded to the longest, outputs trimmed back, each
/// within the error bound of what the request gets alone.
@Suite("Padded batching")
struct PaddedBatchingTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../MaaSComputeTests/Fixtures/transformers").standardized.path
    let clock = ManualClock()

    /// A repository holding one fixture export as `model/1`, with an optional config.json.
    static let tokenizer = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../MaaSTextTests/Fixtures/minilm_tokenizer.json").standardized.path

    func load(_ fixture: String, config: String? = nil, withTokenizer: Bool = false) async throws -> ModelVersion {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("repo-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root + "/model/1", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: "\(Self.fixtures)/\(fixture).onnx", toPath: root + "/model/1/model.onnx")
        if FileManager.default.fileExists(atPath: "\(Self.fixtures)/\(fixture).onnx.data") {
            try FileManager.default.copyItem(atPath: "\(Self.fixtures)/\(fixture).onnx.data", toPath: "\(root)/model/1/\(fixture).onnx.data")
        }
        if let config { try config.write(toFile: root + "/model/config.json", atomically: true, encoding: .utf8) }
        if withTokenizer { try FileManager.default.copyItem(atPath: Self.tokenizer, toPath: root + "/model/1/tokenizer.json") }
        let repository = ModelRepository(path: root, clock: clock)
        try await repository.load("model")
        return try repository.version("model", "")
    }

    /// Token inputs for `rows` sequences of `length` tokens (the last row's final two masked out
    /// when `padded`, as a client's own padding would be).
    static func tokens(_ names: [String], rows: Int, length: Int, seed: UInt64, padded: Bool = false) throws -> [String: Tensor] {
        var random = SplitMix64(seed: seed)
        var result: [String: Tensor] = [:]
        for name in names {
            var values = [Int64](repeating: 0, count: rows * length)
            for i in values.indices {
                switch name {
                case "input_ids": values[i] = Int64(3 + random.next() % 400)
                case "attention_mask": values[i] = padded && i / length == rows - 1 && i % length >= length - 2 ? 0 : 1
                default: values[i] = Int64(random.next() % 2)
                }
            }
            result[name] = try Tensor(values, shape: [rows, length])
        }
        return result
    }

    /// Submits every item at once, lets the batching delay pass, and returns their outputs.
    func submitTogether(_ model: ModelVersion, _ requests: [[String: Tensor]]) async throws -> [[String: Tensor]] {
        let results = Mutex([Int: Result<[String: Tensor], InferenceError>]())
        try await withCheckedThrowingContinuation { (finished: CheckedContinuation<Void, any Error>) in
            let items = requests.enumerated().map { index, inputs in
                BatchItem(inputs: inputs, rows: inputs.first!.value.shape[0], outputs: [], deadline: nil, cancellation: nil) { result in
                    if results.withLock({ $0[index] = result; return $0.count }) == requests.count { finished.resume() }
                }
            }
            model.batcher.submit(items)
            clock.advance(by: .seconds(1))
        }
        return try results.withLock { results in try (0..<requests.count).map { try results[$0]!.get() } }
    }

    @Test("Hugging Face token inputs get padded batching without configuration", arguments: [
        ("bert.torchscript.op17", ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state"]),
        ("roberta.dynamo.op20", ["input_ids", "attention_mask"], ["last_hidden_state"]),
        ("gpt2.torchscript.op17", ["input_ids", "attention_mask"], ["logits"]),
        ("bert_classifier.dynamo.op20", ["input_ids", "attention_mask", "token_type_ids"], []),
    ])
    func derivedAndEqualAlone(fixture: String, inputs: [String], trimmed: [String]) async throws {
        let model = try await load(fixture)
        let padding = try #require(model.config.paddedBatching)
        #expect(Set(padding.padValues.keys) == Set(inputs) && padding.padValues.values.allSatisfy { $0 == 0 })
        #expect(padding.trimmedOutputs == trimmed)
        let graph = try ONNXModel.load(path: "\(Self.fixtures)/\(fixture).onnx")
        // Near enough in length to share one pass (padding adds under a tenth).
        let shapes = [(1, 12), (2, 11), (1, 12), (1, 12), (3, 11), (1, 12)]
        let requests = try shapes.enumerated().map { index, shape in
            try Self.tokens(inputs, rows: shape.0, length: shape.1, seed: UInt64(index), padded: shape.0 > 1)
        }
        let batched = try await submitTogether(model, requests)
        #expect(model.batcher.statistics.snapshot.executionCount == 1, "one padded batch of 9 rows x 12 tokens")
        #expect(model.batcher.statistics.snapshot.inferenceCount == 9)
        for (request, outputs) in zip(requests, batched) {
            let alone = try model.compiled.run(request)
            let bound = try ErrorBound(graph: graph, inputs: request)
            for (name, expected) in alone {
                let actual = try #require(outputs[name])
                let verdict = try #require(bound.verdict(name, actual: actual, expected: expected), "\(name): \(actual.shape) vs \(expected.shape)")
                #expect(verdict.passed, "\(fixture) \(name) \(request["input_ids"]!.shape): \(verdict)")
            }
        }
    }

    @Test("requests far apart in length go in separate passes; near ones share one")
    func lengthAware() async throws {
        let model = try await load("bert.torchscript.op17")
        let names = ["input_ids", "attention_mask", "token_type_ids"]
        let requests = try [8, 60, 9, 62, 8, 64].enumerated().map { try Self.tokens(names, rows: 1, length: $1, seed: UInt64($0)) }
        let batched = try await submitTogether(model, requests)
        #expect(model.batcher.statistics.snapshot.executionCount == 2, "the 8s and the 60s")
        #expect(batched.map { $0["last_hidden_state"]!.shape[1] } == [8, 60, 9, 62, 8, 64])
    }

    @Test("a configured padding: nn.TransformerEncoder's float embeddings and boolean padding mask")
    func configured() async throws {
        let model = try await load("torch_encoder.dynamo.op20", config: """
            {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 1000},
             "padded_batching": {"pad_values": {"embeddings": 0, "padding_mask": 1}}}
            """)
        #expect(model.config.paddedBatching?.trimmedOutputs == ["output"])
        var random = SplitMix64(seed: 9)
        let requests = try [5, 12, 8].map { length -> [String: Tensor] in
            let embeddings = (0..<(length * 64)).map { _ in Float(Int(random.next() % 2001) - 1000) / 1000 }
            let keep = [UInt8](repeating: 0, count: length)  // false: not padding
            let mask = try keep.withUnsafeBytes { bytes throws(InferenceError) in try Tensor(dataType: .bool, shape: [1, length], bytes: bytes) }
            return ["embeddings": try Tensor(embeddings, shape: [1, length, 64]), "padding_mask": mask]
        }
        let batched = try await submitTogether(model, requests)
        let graph = try ONNXModel.load(path: "\(Self.fixtures)/torch_encoder.dynamo.op20.onnx")
        for (request, outputs) in zip(requests, batched) {
            let expected = try model.compiled.run(request)["output"]!
            let verdict = try #require(try ErrorBound(graph: graph, inputs: request).verdict("output", actual: outputs["output"]!, expected: expected))
            #expect(verdict.passed, "\(verdict)")
        }
    }

    @Test("contradictory padding is refused at load with the reason", arguments: [
        (#"{"max_batch_size": 4, "padded_batching": {"pad_values": {"input_idz": 0}}}"#, "pads input 'input_idz', which the model does not have"),
        (#"{"max_batch_size": 4, "padded_batching": {"pad_values": {"input_ids": 0.5}}}"#, "pad value 0.5 for input 'input_ids' is not a TYPE_INT64 value"),
        (#"{"max_batch_size": 4, "padded_batching": {"pad_values": {"input_ids": 0}, "trim_outputs": ["pooled"]}}"#, "trims output 'pooled', which the model does not have"),
        (#"{"padded_batching": {"pad_values": {"input_ids": 0}}}"#, "padded_batching needs max_batch_size > 0"),
        (#"{"max_batch_size": 4, "padded_batching": {"pad_values": {}}}"#, "must name the padded inputs"),
        (#"{"max_batch_size": 4, "padded_batching": true}"#, "must be an object"),
    ])
    func contradictions(config: String, message: String) async throws {
        await #expect { try await load("bert.torchscript.op17", config: config) } throws: { error in
            (error as? InferenceError)?.message.contains(message) == true
        }
    }

    @Test("no padding when switched off, and inputs that disagree on the length are refused")
    func offAndDisagreeing() async throws {
        let off = try await load("bert.torchscript.op17", config: #"{"max_batch_size": 4, "padded_batching": false}"#)
        #expect(off.config.paddedBatching == nil)
        let model = try await load("bert.torchscript.op17")
        var request = try Self.tokens(["input_ids", "attention_mask", "token_type_ids"], rows: 1, length: 9, seed: 1)
        request["attention_mask"] = try Tensor([Int64](repeating: 1, count: 7), shape: [1, 7])
        let inputs = request.sorted { $0.key < $1.key }.map { name, tensor in
            InferInput(name: name, datatype: "INT64", shape: tensor.shape.map(Int64.init), contents: .int64(tensor.scalars(as: Int64.self)))
        }
        #expect { try model.prepare(InferenceRequest(modelName: "model", inputs: inputs)) } throws: { error in
            (error as? InferenceError)?.message == "model 'model' version 1: inputs disagree on the sequence length (axis 1): 7 for 'attention_mask', 9 for 'input_ids'"
        }
    }

    @Test("text_input that contradicts the model or itself is refused at load with the reason", arguments: [
        ("bert.torchscript.op17", #"{"max_batch_size": 4, "text_input": {"tokenizer": "tokenizer.json"}}"#, false, "tokenizer.json cannot be read"),
        ("bert.torchscript.op17", #"{"text_input": {"tokenizer": "tokenizer.json"}}"#, true, "text_input needs max_batch_size > 0"),
        ("bert.torchscript.op17", #"{"max_batch_size": 4, "text_input": {"tokenizer": "tokenizer.json", "pooling": "max"}}"#, true, "pooling must be one of"),
        ("bert.torchscript.op17", #"{"max_batch_size": 4, "text_input": {"tokenizer": "tokenizer.json", "max_length": 1}}"#, true, "max_length 1 is out of range"),
        ("bert.torchscript.op17", #"{"max_batch_size": 4, "text_input": {"tokenizer": "../tokenizer.json"}}"#, true, "must name a tokenizer.json file in the version folder"),
        ("bert.torchscript.op17", #"{"max_batch_size": 4, "padded_batching": false, "text_input": {"tokenizer": "tokenizer.json"}}"#, true, "text_input needs padded batching"),
        ("torch_encoder.dynamo.op20", #"{"max_batch_size": 4, "text_input": {"tokenizer": "tokenizer.json"}}"#, true, "text_input replaces the token inputs"),
        ("bert_classifier.dynamo.op20", #"{"max_batch_size": 4, "text_input": {"tokenizer": "tokenizer.json"}}"#, true, "pooling 'mean' averages the first output over tokens"),
    ])
    func textInputContradictions(fixture: String, config: String, withTokenizer: Bool, message: String) async throws {
        await #expect { try await load(fixture, config: config, withTokenizer: withTokenizer) } throws: { error in
            (error as? InferenceError)?.message.contains(message) == true
        }
    }

    @Test("a text request is tokenized and pooled; bad BYTES name the element or the length prefix")
    func textRequests() async throws {
        let model = try await load("bert.torchscript.op17", config: #"{"max_batch_size": 4, "text_input": {"tokenizer": "tokenizer.json"}}"#, withTokenizer: true)
        #expect(model.inputMetadata == [TensorMetadata(name: "text", datatype: "BYTES", shape: [-1, 1])])
        #expect(model.outputMetadata == [TensorMetadata(name: "embedding", datatype: "FP32", shape: [-1, 64])])
        // Only tokenized and pooled here, not run: MiniLM's ids exceed the fixture's 500-word vocabulary.
        func request(_ raw: [UInt8]) -> InferenceRequest {
            InferenceRequest(modelName: "model", inputs: [InferInput(name: "text", datatype: "BYTES", shape: [1, 1])], rawInputContents: [raw])
        }
        func prefixed(_ bytes: [UInt8]) -> [UInt8] { withUnsafeBytes(of: UInt32(bytes.count).littleEndian, Array.init) + bytes }
        let prepared = try model.prepare(request(prefixed(Array("a b".utf8))))
        #expect(prepared.rows == 1 && prepared.inputs["input_ids"]?.shape == [1, 4] && prepared.finish != nil)
        #expect(prepared.inputs["input_ids"]?.scalars(as: Int64.self) == [101, 1037, 1038, 102])
        #expect(prepared.inputs["attention_mask"]?.scalars(as: Int64.self) == [1, 1, 1, 1])
        for (raw, message) in [
            (prefixed([0x63, 0xC3]), "input 'text': element 0 is not valid UTF-8 (at byte 1)"),
            ([3, 0, 0], "element 0 has a truncated length prefix"),
            ([9, 0, 0, 0, 0x61], "element 0 says 9 bytes, 1 are left"),
            (prefixed([0x61]) + prefixed([0x62]), "has 2 strings, its shape needs 1"),
        ] as [([UInt8], String)] {
            #expect { try model.prepare(request(raw)) } throws: { error in
                (error as? InferenceError)?.message.contains(message) == true
            }
        }
        // Pooling: the mean over each text's own tokens, L2-normalised.
        let hidden = try Tensor([Float](repeating: 0, count: 2 * 3 * 2).enumerated().map { index, _ in Float(index % 2 == 0 ? 3 : 4) * (index < 6 ? 1 : 2) }, shape: [2, 3, 2])
        let pooled = try #require(model.text).embeddings(["last_hidden_state": hidden], lengths: [3, 1])
        #expect(pooled["embedding"]?.scalars(as: Float.self) == [0.6, 0.8, 0.6, 0.8])
    }
}

import Foundation
@testable import MaaSCompute
import MaaSCore
import MaaSProto
import MaaSTestSupport
import Testing

@Suite("Transformer exports (both PyTorch exporters) against onnxruntime")
struct TransformerFixtureTests {
    /// Every export in Fixtures/transformers, by its file name without `.onnx`.
    static let models: [String] = {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: Fixtures.transformers)) ?? []
        return files.filter { $0.hasSuffix(".onnx") }.map { String($0.dropLast(5)) }.sorted()
    }()

    @Test("the fixture folder holds every family through both exporters")
    func coverage() {
        for family in ["bert", "bert_classifier", "roberta", "distilbert", "albert", "electra", "gpt2", "vit", "torch_encoder"] {
            #expect(Self.models.contains("\(family).torchscript.op17"), "\(family) TorchScript export")
            #expect(Self.models.contains { $0.hasPrefix("\(family).dynamo.op") }, "\(family) dynamo export")
        }
    }

    @Test("batch 1 and a padded batch 3 match onnxruntime", arguments: models, [1, 3])
    func matchesOnnxRuntime(model: String, batch: Int) throws {
        let (inputs, expected) = try Fixtures.cases(model, batch: batch, in: Fixtures.transformers)
        // The TorchScript export of nn.TransformerEncoder has its traced shapes baked in: batch 3 only.
        guard !inputs.isEmpty || batch == 1 else { Issue.record("no fixture for \(model) batch \(batch)"); return }
        guard !inputs.isEmpty else { return }
        let graph = try ONNXModel.load(path: Fixtures.path("\(model).onnx", in: Fixtures.transformers))
        let compiled = try CompiledModel(graph: graph)
        let outputs = try compiled.run(inputs)
        let bound = try ErrorBound(graph: graph, inputs: inputs)
        for (name, reference) in expected {
            let actual = try #require(outputs[name], "output \(name)")
            expectClose(actual, reference, "\(model) b\(batch) \(name)", bound: bound, output: name)
        }
    }

    /// The padded batch only matches when the mask is honoured: the same inputs with every
    /// position marked real must fail the comparison, as must a causal decoder that sees ahead.
    @Test("ignoring the padding mask fails the comparison", arguments: ["bert.torchscript.op17", "bert.dynamo.op20", "gpt2.dynamo.op20", "torch_encoder.dynamo.op20"])
    func maskMatters(model: String) throws {
        var (inputs, expected) = try Fixtures.cases(model, batch: 3, in: Fixtures.transformers)
        let graph = try ONNXModel.load(path: Fixtures.path("\(model).onnx", in: Fixtures.transformers))
        let bound = try ErrorBound(graph: graph, inputs: inputs)
        if let mask = inputs["attention_mask"] {
            inputs["attention_mask"] = try Tensor([Int64](repeating: 1, count: mask.elementCount), shape: mask.shape)
        } else {
            let padding = try #require(inputs["padding_mask"])
            inputs["padding_mask"] = try Tensor(zeros: .bool, shape: padding.shape)
        }
        let outputs = try CompiledModel(graph: graph).run(inputs)
        let (name, reference) = try #require(expected.first)
        let actual = try #require(outputs[name])
        let verdict = try #require(bound.verdict(name, actual: actual, expected: reference))
        #expect(!verdict.passed, "\(model) without its mask: \(verdict)")
    }
}

@Suite("Bool inputs")
struct BoolInputTests {
    @Test("a bool input byte other than 0 or 1 is refused, naming the input and element")
    func invalidBoolByte() throws {
        let model = "torch_encoder.dynamo.op20"
        var (inputs, _) = try Fixtures.cases(model, batch: 1, in: Fixtures.transformers)
        let padding = try #require(inputs["padding_mask"])
        var bytes = [UInt8](repeating: 0, count: padding.elementCount)
        bytes[3] = 2
        inputs["padding_mask"] = try bytes.withUnsafeBytes { try Tensor(dataType: .bool, shape: padding.shape, bytes: $0) }
        let compiled = try CompiledModel(graph: try ONNXModel.load(path: Fixtures.path("\(model).onnx", in: Fixtures.transformers)))
        #expect(throws: InferenceError.invalidInput("input 'padding_mask': element 3 is the byte 2, not a bool (0 or 1)")) {
            try compiled.run(inputs)
        }
    }
}

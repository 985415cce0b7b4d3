@testable import MaaSCompute
import MaaSCore
import MaaSProto
import Testing

/// The compiler's fusions on real exports: every attention block, every MLP's GELU and every
/// residual LayerNorm of the 2-layer fixtures becomes one step (results are checked against
/// onnxruntime in TransformerFixtureTests).
@Suite("Transformer blocks are fused at compile time")
struct FusionTests {
    struct Counts: Equatable, CustomStringConvertible {
        var attention = 0, gelu = 0, residualNorms = 0, softmaxLeft = 0
        var description: String { "attention \(attention), GELU \(gelu), residual LayerNorm \(residualNorms), Softmax left \(softmaxLeft)" }
    }

    static func counts(_ model: String) throws -> Counts {
        let graph = try ONNXModel.load(path: Fixtures.path("\(model).onnx", in: Fixtures.transformers))
        let compiled = try CompiledModel(graph: graph)
        var counts = Counts()
        for step in compiled.steps {
            if step.kernel is AttentionKernel { counts.attention += 1 }
            if let fused = step.kernel as? any EpilogueFusing, fused.gelu != nil { counts.gelu += 1 }
            if let norm = step.kernel as? LayerNormalizationKernel, norm.residual { counts.residualNorms += 1 }
            if step.kernel is SoftmaxKernel { counts.softmaxLeft += 1 }
        }
        return counts
    }

    // Two layers each: one attention and one GELU per layer; post-LN BERTs normalise each residual
    // sum (two per layer, and the embeddings' sum), while pre-LN GPT-2 and ViT read each sum twice
    // (the next norm and the next residual), so only the final norm takes its Add.
    @Test("both exporters' forms", arguments: [
        ("bert.torchscript.op17", Counts(attention: 2, gelu: 2, residualNorms: 5)),
        ("bert.dynamo.op20", Counts(attention: 2, gelu: 2, residualNorms: 5)),
        ("roberta.torchscript.op17", Counts(attention: 2, gelu: 2, residualNorms: 5)),
        ("distilbert.dynamo.op20", Counts(attention: 2, gelu: 2, residualNorms: 5)),
        ("electra.torchscript.op17", Counts(attention: 2, gelu: 2, residualNorms: 5)),
        ("gpt2.torchscript.op17", Counts(attention: 2, gelu: 2, residualNorms: 1)),
        ("gpt2.dynamo.op20", Counts(attention: 2, gelu: 2, residualNorms: 1)),
        ("vit.torchscript.op17", Counts(attention: 2, gelu: 2, residualNorms: 1)),
        ("vit.dynamo.op20", Counts(attention: 2, gelu: 2, residualNorms: 1)),
    ])
    func fused(model: String, expected: Counts) throws {
        let actual = try Self.counts(model)
        #expect(actual == expected, "\(model): \(actual)")
    }
}

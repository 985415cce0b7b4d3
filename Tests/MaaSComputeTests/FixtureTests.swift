import Foundation
@testable import MaaSCompute
import MaaSCore
import MaaSProto
import Testing

/// Fixtures copied from shared/fixtures/onnx: real exports with onnxruntime's outputs.
enum Fixtures {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/onnx").path

    static func path(_ name: String) -> String { directory + "/" + name }

    static func npy(_ name: String) throws -> Tensor {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(name)))
        return try NPY.decode(Array(data), source: name)
    }

    /// Every `NAME.bB.in.*.npy` / `NAME.bB.out.*.npy` pair of a model.
    static func cases(_ model: String, batch: Int) throws -> (inputs: [String: Tensor], outputs: [String: Tensor]) {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        var inputs: [String: Tensor] = [:], outputs: [String: Tensor] = [:]
        for file in files where file.hasPrefix("\(model).b\(batch).") && file.hasSuffix(".npy") {
            let parts = file.dropFirst("\(model).b\(batch).".count).dropLast(4).split(separator: ".", maxSplits: 1)
            let name = String(parts[1])
            if parts[0] == "in" { inputs[name] = try npy(file) } else { outputs[name] = try npy(file) }
        }
        return (inputs, outputs)
    }
}

/// max relative error ≤ 1e-5, absolute ≤ 1e-6 near zero; integers exactly.
func expectClose(_ actual: Tensor, _ expected: Tensor, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.shape == expected.shape, "\(what): shape", sourceLocation: sourceLocation)
    #expect(actual.dataType == expected.dataType, "\(what): type", sourceLocation: sourceLocation)
    guard actual.shape == expected.shape, actual.dataType == expected.dataType else { return }
    switch expected.dataType {
    case .float32:
        let a = actual.scalars(as: Float.self), e = expected.scalars(as: Float.self)
        var worst: (index: Int, error: Float) = (0, 0)
        for i in a.indices {
            let error = abs(a[i] - e[i])
            let scaled = error <= 1e-6 ? 0 : error / max(abs(e[i]), 1e-30)
            if scaled > worst.error { worst = (i, scaled) }
        }
        #expect(worst.error <= 1e-5, "\(what): element \(worst.index) is \(a[worst.index]), expected \(e[worst.index]) (relative error \(worst.error))", sourceLocation: sourceLocation)
    case .int64:
        #expect(actual.scalars(as: Int64.self) == expected.scalars(as: Int64.self), "\(what)", sourceLocation: sourceLocation)
    default:
        #expect(actual.withUnsafeBytes { Array($0) } == expected.withUnsafeBytes { Array($0) }, "\(what)", sourceLocation: sourceLocation)
    }
}

@Suite("Real ONNX exports against onnxruntime")
struct FixtureTests {
    static let models = [
        "seed_mlp.torchscript.op17", "seed_mlp.dynamo.op18", "seed_default", "mlp3d.torchscript.op17",
        "deep_mlp.torchscript.op17", "mnist_cnn.torchscript.op17",
        "sk_mlpclassifier_nozipmap.skl2onnx.op17", "sk_mlpregressor.skl2onnx.op17",
    ]

    @Test("batch 1 and 3 match onnxruntime", arguments: models, [1, 3])
    func matchesOnnxRuntime(model: String, batch: Int) throws {
        let graph = try ONNXModel.load(path: Fixtures.path("\(model).onnx"))
        let compiled = try CompiledModel(graph: graph)
        let (inputs, expected) = try Fixtures.cases(model, batch: batch)
        try #require(!inputs.isEmpty && !expected.isEmpty, "fixture files for \(model) batch \(batch)")
        let outputs = try compiled.run(inputs)
        for (name, reference) in expected {
            let actual = try #require(outputs[name], "output \(name)")
            expectClose(actual, reference, "\(model) b\(batch) \(name)")
        }
    }
}

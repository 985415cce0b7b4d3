import Foundation
@testable import MaaSCompute
import MaaSCore
import MaaSProto
import MaaSTestSupport
import Testing

/// Fixtures copied from shared/fixtures/onnx: real exports with onnxruntime's outputs.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path
    static let directory = root + "/onnx"
    /// Our own small random-initialised transformer exports (scripts/make-transformer-fixtures).
    static let transformers = root + "/transformers"

    static func path(_ name: String, in directory: String = directory) -> String { directory + "/" + name }

    static func npy(_ name: String, in directory: String = directory) throws -> Tensor {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(name, in: directory)))
        return try NPY.decode(Array(data), source: name)
    }

    /// Every `NAME.bB.in.*.npy` / `NAME.bB.out.*.npy` pair of a model.
    static func cases(_ model: String, batch: Int, in directory: String = directory) throws -> (inputs: [String: Tensor], outputs: [String: Tensor]) {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        var inputs: [String: Tensor] = [:], outputs: [String: Tensor] = [:]
        for file in files where file.hasPrefix("\(model).b\(batch).") && file.hasSuffix(".npy") {
            let parts = file.dropFirst("\(model).b\(batch).".count).dropLast(4).split(separator: ".", maxSplits: 1)
            let name = String(parts[1])
            if parts[0] == "in" { inputs[name] = try npy(file, in: directory) } else { outputs[name] = try npy(file, in: directory) }
        }
        return (inputs, outputs)
    }
}

/// Within the bound ``ErrorBound`` derives for this graph and these inputs; integers exactly.
func expectClose(
    _ actual: Tensor, _ expected: Tensor, _ what: String, bound: ErrorBound, output: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(actual.shape == expected.shape, "\(what): shape", sourceLocation: sourceLocation)
    #expect(actual.dataType == expected.dataType, "\(what): type", sourceLocation: sourceLocation)
    guard let verdict = bound.verdict(output, actual: actual, expected: expected) else { return }
    #expect(verdict.passed, "\(what): \(verdict)", sourceLocation: sourceLocation)
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
        let bound = try ErrorBound(graph: graph, inputs: inputs)
        for (name, reference) in expected {
            let actual = try #require(outputs[name], "output \(name)")
            expectClose(actual, reference, "\(model) b\(batch) \(name)", bound: bound, output: name)
        }
    }

    /// Each kind of comparison rejects a real bug's signature: the engine's own output with a
    /// bias dropped, two elements swapped (a wrong index) or one row broadcast to all.
    @Test("deliberately wrong results fail the comparison", arguments: ["seed_mlp.torchscript.op17", "mlp3d.torchscript.op17"])
    func wrongResultsFail(model: String) throws {
        let graph = try ONNXModel.load(path: Fixtures.path("\(model).onnx"))
        let (inputs, expected) = try Fixtures.cases(model, batch: 3)
        let bound = try ErrorBound(graph: graph, inputs: inputs)
        #expect((bound.magnitudes != nil) == (model == "seed_mlp.torchscript.op17"), "seed: elementwise rule; mlp3d (Softmax): normwise")
        let (name, reference) = try #require(expected.first)
        let values = reference.scalars(as: Float.self)
        let width = reference.shape.last!
        #expect(bound.verdict(name, actual: reference, expected: reference)?.passed == true)

        var swapped = values
        swapped.swapAt(0, 1)
        var broadcast = values
        for row in 1..<values.count / width { for j in 0..<width { broadcast[row * width + j] = values[j] } }
        var withoutBias = graph
        let last = graph.nodes.last { ["Gemm", "Add"].contains($0.opType) }!
        let biasName = last.opType == "Gemm" ? last.inputs[2] : try #require(last.inputs.first { graph.initializers[$0] != nil })
        withoutBias.initializers[biasName] = try Tensor(zeros: .float32, shape: graph.initializers[biasName]!.shape)
        let noBias = try #require(try CompiledModel(graph: withoutBias).run(inputs)[name])

        for (what, wrong) in [("swapped", try Tensor(swapped, shape: reference.shape)), ("broadcast", try Tensor(broadcast, shape: reference.shape)), ("no bias", noBias)] {
            let verdict = try #require(bound.verdict(name, actual: wrong, expected: reference))
            #expect(!verdict.passed, "\(model): \(what) passed: \(verdict)")
        }
    }

    @Test("integer outputs must match exactly")
    func integersAreExact() throws {
        let model = "sk_mlpclassifier_nozipmap.skl2onnx.op17"
        let graph = try ONNXModel.load(path: Fixtures.path("\(model).onnx"))
        let (inputs, expected) = try Fixtures.cases(model, batch: 3)
        let bound = try ErrorBound(graph: graph, inputs: inputs)
        let labels = try #require(expected["label"])
        var wrong = labels.scalars(as: Int64.self)
        wrong[0] = (wrong[0] + 1) % 3
        #expect(bound.verdict("label", actual: labels, expected: labels)?.passed == true)
        #expect(bound.verdict("label", actual: try Tensor(wrong, shape: labels.shape), expected: labels)?.passed == false)
    }
}

@Suite("Engine limits and errors")
struct EngineLimitTests {
    func seed() throws -> ModelGraph {
        try ONNXModel.load(path: Fixtures.path("seed_mlp.torchscript.op17.onnx"))
    }

    @Test("a plan that would need more memory than allowed is refused, and smaller ones still run")
    func planBudget() throws {
        let model = try CompiledModel(graph: try seed(), maxPlanBytes: 64 << 10)
        let big = try Tensor(zeros: .float32, shape: [1000, 10])
        #expect(throws: InferenceError.self) { try model.run(["input": big]) }
        do {
            _ = try model.run(["input": big])
        } catch {
            #expect(error.code == .resourceExhausted)
            #expect(error.message.contains("MiB"))
        }
        let small = try Tensor(zeros: .float32, shape: [2, 10])
        #expect(try model.run(["input": small])["output"]?.shape == [2, 10])
    }

    @Test("missing, unknown and mistyped inputs name the input")
    func inputErrors() throws {
        let model = try CompiledModel(graph: try seed())
        #expect(throws: InferenceError.invalidInput("missing input 'input'")) { try model.run([:]) }
        let good = try Tensor(zeros: .float32, shape: [1, 10])
        #expect { try model.run(["input": good, "extra": good]) } throws: { ($0 as? InferenceError)?.message.contains("unknown input 'extra'") == true }
        let wrong = try Tensor(zeros: .int64, shape: [1, 10])
        #expect(throws: InferenceError.invalidInput("input 'input': expected float32, got int64")) { try model.run(["input": wrong]) }
    }

    @Test("graphs built in Swift: cycles and unknown ops are refused at compile time")
    func compileErrors() throws {
        let x = ValueInfo(name: "x", dataType: .float32, shape: [.fixed(1), .fixed(2)])
        let cycle = ModelGraph(
            inputs: [x], outputs: [ValueInfo(name: "b", dataType: .float32, shape: [])],
            nodes: [Node(name: "one", opType: "Add", inputs: ["x", "c"], outputs: ["b"]), Node(name: "two", opType: "Relu", inputs: ["b"], outputs: ["c"])])
        #expect { try CompiledModel(graph: cycle) } throws: { ($0 as? InferenceError)?.message.contains("cycle") == true }
        let unknown = ModelGraph(
            inputs: [x], outputs: [ValueInfo(name: "y", dataType: .float32, shape: [])],
            nodes: [Node(name: "n", opType: "Frobnicate", inputs: ["x"], outputs: ["y"])])
        #expect { try CompiledModel(graph: unknown) } throws: { error in
            let e = error as? InferenceError
            return e?.code == .unimplemented && e?.message.contains("'Frobnicate'") == true && e?.message.contains("'n'") == true
        }
    }

    @Test("typed initializer data is checked before anything is allocated for it")
    func hugeTypedInitializer() throws {
        // A TensorProto claiming dims [2^31-1, 64] of float with no data at all.
        var tensor: [UInt8] = []
        func field(_ number: Int, _ wire: UInt8, _ payload: [UInt8]) -> [UInt8] { [UInt8(number << 3) | wire] + payload }
        let dims = varint(Int64(Int32.max)) + varint(64)
        tensor += field(1, 2, varint(Int64(dims.count)) + dims)
        tensor += field(2, 0, varint(1))
        tensor += field(8, 2, varint(1) + Array("w".utf8))
        let graph = field(5, 2, varint(Int64(tensor.count)) + tensor)
        let opset = field(2, 0, varint(17))
        var model = field(8, 2, varint(Int64(opset.count)) + opset)
        model += field(7, 2, varint(Int64(graph.count)) + graph)
        #expect { try model.withUnsafeBytes { try ONNXModel.decode($0) } } throws: { error in
            (error as? InferenceError)?.message.contains("initializer 'w'") == true
        }
    }
}

func varint(_ value: Int64) -> [UInt8] {
    var v = UInt64(bitPattern: value)
    var out: [UInt8] = []
    repeat {
        var byte = UInt8(v & 0x7F)
        v >>= 7
        if v != 0 { byte |= 0x80 }
        out.append(byte)
    } while v != 0
    return out
}

import Foundation
import MaaSCompute
import MaaSCore
import MaaSProto
import MaaSTestSupport
@testable import MaaSTraining
import Testing

@Suite("ONNX export and import")
struct ExportTests {
    static let engineFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../MaaSComputeTests/Fixtures/onnx").standardized.path

    @Test(arguments: Activation.allCases)
    func exportedModelRoundTripsAndRunsInTheEngine(_ activation: Activation) throws {
        let model = try MLP(layerSizes: [5, 9, 7, 3], activation: activation, seed: 11)
        let bytes = try ONNXModel.encode(model.graph(metadata: ["training.loss": "mse"]))
        let graph = try bytes.withUnsafeBytes { try ONNXModel.decode($0, source: "exported") }
        #expect(graph.opsets == ["": 17])
        #expect(graph.metadata == ["training.loss": "mse"])
        #expect(graph.inputs == [ValueInfo(name: "input", dataType: .float32, shape: [.symbolic("batch"), .fixed(5)])])
        #expect(try MLP(graph: graph, source: "exported") == model)

        var generator = SplitMix64(seed: 3)
        let rows = 6
        let features = (0..<rows * 5).map { _ in generator.nextUnitFloat() * 6 - 3 }
        let ours = try Trainer(model: model, loss: .mse, optimizer: OptimizerConfiguration(kind: .sgd, learningRate: 1))
            .predict(features, rows: rows)
        let input = try Tensor(features, shape: [rows, 5])
        let engine = try #require(try CompiledModel(graph: graph).run(["input": input])["output"])
        let verdict = try ErrorBound(graph: graph, inputs: ["input": input]).verdict("output", actual: Tensor(ours, shape: engine.shape), expected: engine)
        #expect(verdict?.passed == true, "trainer vs engine: \(String(describing: verdict))")
    }

    @Test(arguments: ["seed_mlp.torchscript.op17", "seed_mlp.dynamo.op18"])
    func readsPyTorchExports(_ name: String) throws {
        let graph = try ONNXModel.load(path: "\(Self.engineFixtures)/\(name).onnx")
        let model = try MLP(graph: graph, source: name)
        #expect(model.layerSizes == [10, 20, 10])
        #expect(model.activation == .relu)
        let input = try NPY.decode(Array(Data(contentsOf: URL(fileURLWithPath: "\(Self.engineFixtures)/\(name).b3.in.input.npy"))))
        let expected = try NPY.decode(Array(Data(contentsOf: URL(fileURLWithPath: "\(Self.engineFixtures)/\(name).b3.out.output.npy"))))
        let ours = try Trainer(model: model, loss: .mse, optimizer: OptimizerConfiguration(kind: .sgd, learningRate: 1))
            .predict(input.scalars(as: Float.self), rows: 3)
        let verdict = try ErrorBound(graph: graph, inputs: ["input": input]).verdict("output", actual: Tensor(ours, shape: expected.shape), expected: expected)
        #expect(verdict?.passed == true, "trainer vs onnxruntime: \(String(describing: verdict))")
    }

    @Test(arguments: [
        ("deep_mlp.torchscript.op17", "BatchNormalization"),
        ("sk_mlpregressor.skl2onnx.op17", "(Cast) is not a Linear layer"),
        ("mnist_cnn.torchscript.op17", "(Conv) is not a Linear layer"),
    ])
    func refusesGraphsThatAreNotMLPs(_ name: String, _ reason: String) throws {
        let graph = try ONNXModel.load(path: "\(Self.engineFixtures)/\(name).onnx")
        let error = try #require(throws: TrainingError.self) { try MLP(graph: graph, source: name) }
        #expect(error.message.hasPrefix("\(name): not an MLP"))
        #expect(error.message.contains(reason), "\(error.message)")
    }

    @Test func malformedGraphsAreRefusedNotCrashedOn() throws {
        let input = ValueInfo(name: "x", dataType: .float32, shape: [.symbolic("batch"), .fixed(2)])
        let output = ValueInfo(name: "y", dataType: .float32, shape: [.symbolic("batch"), .fixed(2)])
        let loop = ModelGraph(
            inputs: [input], outputs: [output],
            nodes: [Node(opType: "Identity", inputs: ["x"], outputs: ["a"]), Node(opType: "Identity", inputs: ["a"], outputs: ["x"])])
        #expect(throws: TrainingError("loop: not an MLP this trainer can start from: the graph loops back on itself at 'x'")) {
            try MLP(graph: loop, source: "loop")
        }
        let lonely = ModelGraph(inputs: [input], outputs: [output], nodes: [Node(name: "g", opType: "Gemm", inputs: ["x"], outputs: ["y"])])
        #expect(throws: TrainingError("lonely: not an MLP this trainer can start from: Gemm node 'g' does not multiply the data, untransposed, by a weight")) {
            try MLP(graph: lonely, source: "lonely")
        }
        let mute = ModelGraph(inputs: [input], outputs: [output], nodes: [Node(name: "r", opType: "Relu", inputs: ["x"], outputs: [])])
        #expect(throws: TrainingError("mute: not an MLP this trainer can start from: Relu node 'r' has no output")) {
            try MLP(graph: mute, source: "mute")
        }
    }

    @Test func fitAndEvaluateRefuseDataThatDoesNotFit() throws {
        let trainer = try Trainer(
            model: MLP(layerSizes: [2, 3, 2], activation: .relu, seed: 1), loss: .crossEntropy,
            optimizer: OptimizerConfiguration(kind: .adam, learningRate: 0.01))
        let outOfRange = try TrainingData(features: [1, 2, 3, 4], featureWidth: 2, targets: .classes([0, 5]))
        #expect(throws: TrainingError.self) { try trainer.fit(outOfRange, options: FitOptions(epochs: 1)) }
        #expect(throws: TrainingError.self) { try trainer.evaluate(outOfRange) }
        let empty = try TrainingData(features: [], featureWidth: 2, targets: .classes([]))
        #expect(throws: TrainingError("features: no rows")) { try trainer.fit(empty, options: FitOptions(epochs: 1)) }
        let fine = try TrainingData(features: [1, 2, 3, 4], featureWidth: 2, targets: .classes([0, 1]))
        #expect(throws: TrainingError.self) { try trainer.fit(fine, options: FitOptions(epochs: 0)) }
    }
}

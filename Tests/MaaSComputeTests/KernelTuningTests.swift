@testable import MaaSCompute
import MaaSCore
import MaaSProto
import Testing

@Suite("Kernel choice per plan")
struct KernelTuningTests {
    /// The CNN fixture: two convolutions and two Gemms, each with several implementations that
    /// apply (unless MAAS_KERNEL / MAAS_CONV force one, as scripts/test's kernel modes do).
    @Test("each GEMM and convolution reports its choice; timed choices are the fastest measured")
    func choicesAreReported() throws {
        let graph = try ONNXModel.load(path: Fixtures.path("mnist_cnn.torchscript.op17.onnx"))
        let model = try CompiledModel(graph: graph)
        let choices = try model.kernelChoices(for: ["input": [2, 1, 28, 28]])
        #expect(choices.map { $0.node.contains("Conv") } == [true, true, false, false], "\(choices)")
        for choice in choices {
            switch choice.reason {
            case "fastest when timed":
                #expect(choice.timings.count >= 2)
                #expect(choice.chosen == choice.timings.min { $0.seconds < $1.seconds }?.implementation)
            case let reason:
                #expect(reason.hasPrefix("forced by MAAS_") || reason == "only one applies", "\(choice)")
                #expect(choice.timings.isEmpty)
            }
        }
        // The plan for other shapes chooses again; the same shapes reuse the decision.
        #expect(try model.kernelChoices(for: ["input": [2, 1, 28, 28]]).map(\.description) == choices.map(\.description))
        #expect(try model.kernelChoices(for: ["input": [5, 1, 28, 28]]).first?.shapes.first == [5, 1, 28, 28])
    }

    @Test("the implementations offered follow the shapes and the weight's layout")
    func candidates() {
        #expect(GEMMImplementation.candidates(m: 256, n: 512, k: 512, layout: .panels) == [.panels], "panels are the only copy")
        #expect(GEMMImplementation.candidates(m: 2, n: 4, k: 8, layout: .rowMajor) == [.blasRows], "too small to time")
        #expect(GEMMImplementation.candidates(m: 256, n: 512, k: 512, layout: .rowMajor) == [.blasRows, .blasColumns])
        #expect(GEMMImplementation.candidates(m: 256, n: 512, k: 512, layout: nil) == [.blasRows, .blasColumns])
        #expect(GEMMImplementation.candidates(m: 256, n: 16, k: 512, layout: nil) == [.blasRows], "too narrow to split by columns")
    }

    @Test("a weight every reader packed is held once: the plan gets no buffer for it")
    func packedWeightsAreHeldOnce() throws {
        let graph = try ONNXModel.load(path: Fixtures.path("mnist_cnn.torchscript.op17.onnx"))
        let model = try CompiledModel(graph: graph)
        #expect(model.graph.initializers.isEmpty)
        let gemms = model.steps.filter { $0.kernel is GemmKernel }
        #expect(gemms.count == 2)
        for gemm in gemms {
            let weight = try #require(gemm.inputs[1])
            #expect(model.constants[weight] == nil && model.packedConstants[weight] != nil, "\(gemm.node.label)")
            #expect((gemm.kernel as! GemmKernel).packed?.layout == PackedMatrix.preferredLayout)
        }
        // Still runs, and reports the dropped weights' shapes to the shape checks.
        #expect(try model.run(["input": Tensor(zeros: .float32, shape: [3, 1, 28, 28])])["output"]?.shape == [3, 10])
    }

    @Test("Conv, Relu and a 2x2 MaxPool run as one step where the direct kernel applies")
    func maxPoolFusesIntoTheConvolution() throws {
        let graph = try ONNXModel.load(path: Fixtures.path("mnist_cnn.torchscript.op17.onnx"))
        let model = try CompiledModel(graph: graph)
        let ops = model.steps.map(\.node.opType)
        let direct = SmallGEMM.isAvailable && ConvImplementation.forced(among: [.direct, .im2colPanels, .im2colBLAS]) ?? .direct == .direct
        #expect(ops == (direct ? ["Conv", "Conv", "Flatten", "Gemm", "Gemm"] : ["Conv", "Conv", "MaxPool", "Flatten", "Gemm", "Gemm"]), "\(ops)")
        if direct {
            let pooled = try #require(model.steps[1].kernel as? ConvKernel)
            #expect(pooled.pooled && pooled.relu)
            #expect(try model.outputShapes(for: ["input": [3, 1, 28, 28]])["output"] == [3, 10])
        }
    }

    @Test("a warm-up's timing serves every batch size in its power-of-two bucket")
    func bucketsShareDecisions() throws {
        let graph = try ONNXModel.load(path: Fixtures.path("mnist_cnn.torchscript.op17.onnx"))
        let model = try CompiledModel(graph: graph)
        try model.tune(for: [["input": [8, 1, 28, 28]]])
        let timed = try model.kernelChoices(for: ["input": [8, 1, 28, 28]])
        #expect(try model.kernelChoices(for: ["input": [6, 1, 28, 28]]).map(\.description) == timed.map(\.description))
        #expect(try model.kernelChoices(for: ["input": [9, 1, 28, 28]]).first?.shapes.first == [9, 1, 28, 28], "9 is in the next bucket")
    }

    @Test("a fused MaxPool refuses an input too small for its window, as the MaxPool alone does")
    func fusedPoolKeepsTheError() throws {
        let x = ValueInfo(name: "x", dataType: .float32, shape: [.symbolic("n"), .fixed(1), .symbolic("h"), .symbolic("w")])
        let graph = ModelGraph(
            inputs: [x], outputs: [ValueInfo(name: "z", dataType: .float32, shape: [])],
            initializers: ["w": try Tensor([Float](repeating: 0.5, count: 9), shape: [1, 1, 3, 3])],
            nodes: [
                Node(name: "conv", opType: "Conv", inputs: ["x", "w"], outputs: ["y"]),
                Node(name: "pool", opType: "MaxPool", inputs: ["y"], outputs: ["z"], attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]),
            ])
        let model = try CompiledModel(graph: graph)
        #expect(try model.run(["x": Tensor(zeros: .float32, shape: [1, 1, 5, 5])])["z"]?.shape == [1, 1, 1, 1])
        #expect { try model.run(["x": Tensor(zeros: .float32, shape: [1, 1, 3, 3])]) } throws: { error in
            let e = error as? InferenceError
            return e?.code == .invalidArgument && e?.message.contains("is larger than the padded input") == true
        }
    }
}

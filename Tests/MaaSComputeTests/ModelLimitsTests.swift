@testable import MaaSCompute
import MaaSCore
import Testing

/// Sizes a model file declares are checked before anything is allocated for them. Each case was
/// found with the onnx fuzz harness (Tests/Fuzz/ONNXFuzz.swift); the seeds are in its corpus.
@Suite("Model limits")
struct ModelLimitsTests {
    static let x = ValueInfo(name: "x", dataType: .float32, shape: [.fixed(1)])
    static let y = ValueInfo(name: "y", dataType: .float32, shape: [])

    static func int64s(_ values: [Int64]) throws -> Tensor { try Tensor(values, shape: [values.count]) }

    /// Small constants that describe a huge folded value: Expand of one float to [40000, 40000]
    /// (6.4 GB), a broadcasting Add of [30000, 1] and [1, 30000] (3.6 GB), ConstantOfShape and
    /// Range of 2^27 int64s (1 GiB each).
    static func amplifiers() throws -> [(String, ModelGraph)] {
        let add = Node(name: "add", opType: "Add", inputs: ["x", "big"], outputs: ["y"])
        let i64 = ValueInfo(name: "x", dataType: .int64, shape: [.fixed(1)])
        let i64Output = ValueInfo(name: "y", dataType: .int64, shape: [])
        return [
            ("Expand", ModelGraph(
                inputs: [x], outputs: [y],
                initializers: ["one": try Tensor([Float(1)], shape: [1]), "shape": try int64s([40_000, 40_000])],
                nodes: [Node(name: "expand", opType: "Expand", inputs: ["one", "shape"], outputs: ["big"]), add])),
            ("Add", ModelGraph(
                inputs: [x], outputs: [y],
                initializers: [
                    "column": try Tensor(zeros: .float32, shape: [30_000, 1]), "row": try Tensor(zeros: .float32, shape: [1, 30_000]),
                ],
                nodes: [Node(name: "outer", opType: "Add", inputs: ["column", "row"], outputs: ["big"]), add])),
            ("ConstantOfShape", ModelGraph(
                inputs: [i64], outputs: [i64Output],
                initializers: ["shape": try int64s([1 << 27])],
                nodes: [
                    Node(name: "fill", opType: "ConstantOfShape", inputs: ["shape"], outputs: ["big"], attributes: ["value": .tensor(try int64s([1]))]),
                    add,
                ])),
            ("Range", ModelGraph(
                inputs: [i64], outputs: [i64Output],
                initializers: ["start": try Tensor([Int64(0)], shape: []), "limit": try Tensor([Int64(1 << 27)], shape: []), "delta": try Tensor([Int64(1)], shape: [])],
                nodes: [Node(name: "range", opType: "Range", inputs: ["start", "limit", "delta"], outputs: ["big"]), add])),
        ]
    }

    @Test("constants folded at load share the plan memory budget, checked before allocating", arguments: 0..<4)
    func foldingAtLoadIsBudgeted(index: Int) throws {
        let (op, graph) = try Self.amplifiers()[index]
        #expect {
            try CompiledModel(graph: graph, maxPlanBytes: 1 << 20)
        } throws: { error in
            let e = error as? InferenceError
            return e?.code == .resourceExhausted && e?.message.contains("\(op) node") == true && e?.message.contains("plan memory budget") == true
        }
    }

    @Test("values folded while a plan is built come out of its budget: Expand to a shape computed from the input's")
    func foldingInAPlanIsBudgeted() throws {
        // y = Expand(1.0, Shape(x) * [100000, 10000]): [100000, 30000] floats (12 GB) for x [1, 3].
        let graph = ModelGraph(
            inputs: [ValueInfo(name: "x", dataType: .float32, shape: [.symbolic("batch"), .fixed(3)])], outputs: [Self.y],
            initializers: ["one": try Tensor([Float(1)], shape: [1]), "scale": try Self.int64s([100_000, 10_000])],
            nodes: [
                Node(name: "shape", opType: "Shape", inputs: ["x"], outputs: ["s"]),
                Node(name: "scaled", opType: "Mul", inputs: ["s", "scale"], outputs: ["t"]),
                Node(name: "expand", opType: "Expand", inputs: ["one", "t"], outputs: ["y"]),
            ])
        let model = try CompiledModel(graph: graph, maxPlanBytes: 1 << 20)
        #expect {
            try model.run(["x": try Tensor(zeros: .float32, shape: [1, 3])])
        } throws: { ($0 as? InferenceError)?.code == .resourceExhausted }
        // The same graph with a small shape still runs.
        let small = try CompiledModel(
            graph: ModelGraph(
                inputs: graph.inputs, outputs: graph.outputs,
                initializers: ["one": try Tensor([Float(1)], shape: [1]), "scale": try Self.int64s([2, 1])], nodes: graph.nodes),
            maxPlanBytes: 1 << 20)
        #expect(try small.run(["x": try Tensor(zeros: .float32, shape: [1, 3])])["y"]?.scalars(as: Float.self) == [1, 1, 1, 1, 1, 1])
    }

    @Test("warm-up inputs of a declared shape past the budget are refused before they are allocated")
    func zeroInputsCheckTheBudget() throws {
        // 66 bytes of ONNX declared x as [60000, 60000] floats: 14.4 GB of zeros for the warm-up.
        let graph = ModelGraph(
            inputs: [ValueInfo(name: "x", dataType: .float32, shape: [.fixed(60_000), .fixed(60_000)])], outputs: [Self.y],
            nodes: [Node(name: "relu", opType: "Relu", inputs: ["x"], outputs: ["y"])])
        let model = try CompiledModel(graph: graph)
        #expect { try model.zeroInputs(["x": [60_000, 60_000]]) } throws: { ($0 as? InferenceError)?.code == .resourceExhausted }
        #expect(try model.zeroInputs(["x": [60_000, 60_000].map { _ in 2 }])["x"]?.shape == [2, 2])
    }

    @Test("a graph output declared twice is refused (outputs are answered by name)")
    func duplicateOutputs() throws {
        let graph = ModelGraph(
            inputs: [ValueInfo(name: "x", dataType: .float32, shape: [.fixed(2)])], outputs: [Self.y, Self.y],
            nodes: [Node(name: "relu", opType: "Relu", inputs: ["x"], outputs: ["y"])])
        #expect { try CompiledModel(graph: graph) } throws: {
            ($0 as? InferenceError)?.message.contains("graph output 'y' is declared twice") == true
        }
    }

    @Test("a node listing more outputs than its op gives is refused; left-out optional outputs are fine")
    func outputCounts() throws {
        let x = ValueInfo(name: "x", dataType: .float32, shape: [.fixed(1), .fixed(1), .fixed(4), .fixed(4)])
        func graph(_ node: Node, constant: Bool = false) -> ModelGraph {
            ModelGraph(
                inputs: constant ? [] : [x], outputs: [Self.y],
                initializers: constant ? ["x": try! Tensor(zeros: .float32, shape: [1, 1, 4, 4])] : [:], nodes: [node])
        }
        let input = ["x": try Tensor(zeros: .float32, shape: [1, 1, 4, 4])]
        // Found by the onnx fuzz harness (a mutated scikit-learn MLP): run in a plan, and folded at load.
        let relu = Node(name: "relu", opType: "Relu", inputs: ["x"], outputs: ["y", "extra"])
        #expect { try CompiledModel(graph: graph(relu)).run(input) } throws: {
            ($0 as? InferenceError)?.message.contains("Relu node 'relu' lists 2 outputs, but Relu gives 1") == true
        }
        #expect { try CompiledModel(graph: graph(relu, constant: true)) } throws: {
            ($0 as? InferenceError)?.message.contains("lists 2 outputs") == true
        }
        // Empty names are outputs left out, trailing (MaxPool's Indices) or not (Dropout's output, mask kept).
        let pool = Node(opType: "MaxPool", inputs: ["x"], outputs: ["y", ""], attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])])
        #expect(try CompiledModel(graph: graph(pool)).run(input)["y"]?.shape == [1, 1, 2, 2])
        let dropout = Node(opType: "Dropout", inputs: ["x"], outputs: ["", "y"])
        let mask = try CompiledModel(graph: graph(dropout)).run(input)["y"]
        #expect(mask?.dataType == .bool && mask?.scalars(as: UInt8.self) == [UInt8](repeating: 1, count: 16))
    }

    /// Found by the onnx fuzz harness: a ReduceMean listing no outputs ran into an empty list of buffers.
    @Test("a node listing no outputs (or only empty names) is refused", arguments: ["Split", "ReduceMean", "Relu"])
    func nodesWithoutOutputs(op: String) throws {
        let x = ValueInfo(name: "x", dataType: .float32, shape: [.fixed(2), .fixed(3)])
        for outputs in [[], ["", ""]] {
            let none = ModelGraph(inputs: [x], outputs: [], nodes: [Node(name: "n", opType: op, inputs: ["x"], outputs: outputs)])
            #expect { try CompiledModel(graph: none) } throws: { ($0 as? InferenceError)?.message.contains("\(op) node 'n' lists no outputs") == true }
        }
    }

    @Test("Split sizes from the file are summed without overflowing")
    func splitSizes() throws {
        let x = ValueInfo(name: "x", dataType: .float32, shape: [.fixed(2), .fixed(3)])
        // Found by the onnx fuzz harness: sizes summing past Int.max trapped.
        let graph = ModelGraph(
            inputs: [x], outputs: [ValueInfo(name: "a", dataType: .float32, shape: []), ValueInfo(name: "b", dataType: .float32, shape: [])],
            initializers: ["split": try Self.int64s([Int64.max, Int64.max - 1])],
            nodes: [Node(name: "split", opType: "Split", inputs: ["x", "split"], outputs: ["a", "b"], attributes: ["axis": .int(1)])])
        #expect { try CompiledModel(graph: graph).run(["x": try Tensor(zeros: .float32, shape: [2, 3])]) } throws: {
            ($0 as? InferenceError)?.message.contains("do not divide a dimension of 3 into 2 outputs") == true
        }
    }

    /// Found by the onnx fuzz harness: an input declared without a shape is fed as a scalar by
    /// the warm-up, and Slice read the size of axis 0 of it.
    @Test("an axis of a scalar is out of range", arguments: [
        Node(name: "n", opType: "Slice", inputs: ["x", "one", "one", "zero"], outputs: ["y"]),
        Node(name: "n", opType: "Softmax", inputs: ["x"], outputs: ["y"]),
        Node(name: "n", opType: "ArgMax", inputs: ["x"], outputs: ["y"]),
        Node(name: "n", opType: "Concat", inputs: ["x", "x"], outputs: ["y"], attributes: ["axis": .int(0)]),
        Node(name: "n", opType: "Gather", inputs: ["x", "zero"], outputs: ["y"]),
        Node(name: "n", opType: "CumSum", inputs: ["x", "zero"], outputs: ["y"]),
    ])
    func scalarAxes(node: Node) throws {
        let graph = ModelGraph(
            inputs: [ValueInfo(name: "x", dataType: .float32, shape: [])], outputs: [Self.y],
            initializers: ["one": try Self.int64s([1]), "zero": try Self.int64s([0])], nodes: [node])
        #expect {
            try CompiledModel(graph: graph).run(["x": try Tensor([Float(1)], shape: [])])
        } throws: { error in
            let e = error as? InferenceError
            return e?.code == .invalidArgument && e?.message.contains("out of range for rank 0") == true
        }
    }

    /// The generators now fill their outputs when folded (not while shapes are inferred).
    @Test("ConstantOfShape and Range give the same values as before, folded at load and in a plan")
    func generatorsStillFold() throws {
        let graph = ModelGraph(
            inputs: [ValueInfo(name: "x", dataType: .float32, shape: [.symbolic("n"), .fixed(2)])],
            outputs: [
                ValueInfo(name: "sevens", dataType: .int64, shape: []), ValueInfo(name: "down", dataType: .float32, shape: []),
                ValueInfo(name: "steps", dataType: .int32, shape: []), ValueInfo(name: "wide", dataType: .float64, shape: []),
                ValueInfo(name: "ones", dataType: .float32, shape: []),
            ],
            initializers: [
                "shape": try Self.int64s([3, 5]),
                "s": try Tensor([Float(2.5)], shape: []), "l": try Tensor([Float(-1)], shape: []), "d": try Tensor([Float(-0.75)], shape: []),
                "s32": try Self.tensor(Int32(-3)), "l32": try Self.tensor(Int32(8)), "d32": try Self.tensor(Int32(4)),
                "s64": try Self.tensor(Double(1)), "l64": try Self.tensor(Double(2)), "d64": try Self.tensor(Double(0.25)),
            ],
            nodes: [
                Node(opType: "ConstantOfShape", inputs: ["shape"], outputs: ["sevens"], attributes: ["value": .tensor(try Self.int64s([7]))]),
                Node(opType: "Range", inputs: ["s", "l", "d"], outputs: ["down"]),
                Node(opType: "Range", inputs: ["s32", "l32", "d32"], outputs: ["steps"]),
                Node(opType: "Range", inputs: ["s64", "l64", "d64"], outputs: ["wide"]),
                // Folded in the plan: the shape is the input's.
                Node(opType: "Shape", inputs: ["x"], outputs: ["xs"]),
                Node(opType: "ConstantOfShape", inputs: ["xs"], outputs: ["ones"], attributes: ["value": .tensor(try Tensor([Float(1)], shape: [1]))]),
            ])
        let outputs = try CompiledModel(graph: graph).run(["x": try Tensor(zeros: .float32, shape: [3, 2])])
        #expect(outputs["sevens"]?.shape == [3, 5])
        #expect(outputs["sevens"]?.scalars(as: Int64.self) == [Int64](repeating: 7, count: 15))
        #expect(outputs["down"]?.scalars(as: Float.self) == [2.5, 1.75, 1, 0.25, -0.5])
        #expect(outputs["steps"]?.scalars(as: Int32.self) == [-3, 1, 5])
        #expect(outputs["wide"]?.scalars(as: Double.self) == [1, 1.25, 1.5, 1.75])
        #expect(outputs["ones"]?.shape == [3, 2])
        #expect(outputs["ones"]?.scalars(as: Float.self) == [Float](repeating: 1, count: 6))
    }

    static func tensor<T>(_ value: T) throws -> Tensor {
        let type: DataType = T.self == Int32.self ? .int32 : .float64
        return try withUnsafeBytes(of: value) { try Tensor(dataType: type, shape: [], bytes: $0) }
    }
}

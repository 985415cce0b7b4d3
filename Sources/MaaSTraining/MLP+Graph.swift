public import MaaSCore

extension MLP {
    /// The model as an ONNX graph, the way `torch.onnx.export` writes `nn.Sequential` at opset
    /// 17: `Gemm` with `transB=1` and weights `[out, in]` named `0.weight`, `0.bias`, `2.weight`
    /// ..., the activation as its own node (GELU decomposed into Div/Erf/Add/Mul/Mul, since
    /// opset 17 has no Gelu), and a dynamic batch dimension `batch`.
    public func graph(
        name: String = "mlp", inputName: String = "input", outputName: String = "output", metadata: [String: String] = [:]
    ) -> ModelGraph {
        var nodes: [Node] = []
        var initializers: [String: Tensor] = [:]
        var current = inputName
        for layer in 0..<layerCount {
            let module = 2 * layer
            let weightName = "\(module).weight", biasName = "\(module).bias"
            // Sizes come from this model, so the tensors' shapes match their values.
            initializers[weightName] = try! Tensor(weight(layer), shape: [layerSizes[layer + 1], layerSizes[layer]])
            initializers[biasName] = try! Tensor(bias(layer), shape: [layerSizes[layer + 1]])
            let isLast = layer == layerCount - 1
            let output = isLast ? outputName : "/\(module)/Gemm_output_0"
            nodes.append(
                Node(name: "/\(module)/Gemm", opType: "Gemm", inputs: [current, weightName, biasName], outputs: [output],
                     attributes: ["alpha": .float(1), "beta": .float(1), "transB": .int(1)]))
            current = output
            if !isLast && activation != .none {
                current = appendActivation(module: module + 1, input: current, nodes: &nodes, initializers: &initializers)
            }
        }
        return ModelGraph(
            name: name, producer: "maas", opsets: ["": 17],
            inputs: [ValueInfo(name: inputName, dataType: .float32, shape: [.symbolic("batch"), .fixed(inputWidth)])],
            outputs: [ValueInfo(name: outputName, dataType: .float32, shape: [.symbolic("batch"), .fixed(outputWidth)])],
            initializers: initializers, nodes: nodes, metadata: metadata)
    }

    private func appendActivation(module: Int, input: String, nodes: inout [Node], initializers: inout [String: Tensor]) -> String {
        let prefix = "/\(module)"
        func single(_ op: String) -> String {
            let output = "\(prefix)/\(op)_output_0"
            nodes.append(Node(name: "\(prefix)/\(op)", opType: op, inputs: [input], outputs: [output]))
            return output
        }
        switch activation {
        case .none: return input
        case .relu: return single("Relu")
        case .tanh: return single("Tanh")
        case .sigmoid: return single("Sigmoid")
        case .gelu:
            // x · 0.5 · (1 + erf(x / √2)), in the order PyTorch's exporter writes it.
            let constants: [(String, Float)] = [("sqrt2", Float(2).squareRoot()), ("one", 1), ("half", 0.5)]
            for (name, value) in constants { initializers["\(prefix)/\(name)"] = try! Tensor([value], shape: []) }
            let steps: [(op: String, inputs: [String])] = [
                ("Div", [input, "\(prefix)/sqrt2"]), ("Erf", ["\(prefix)/Div_output_0"]),
                ("Add", ["\(prefix)/Erf_output_0", "\(prefix)/one"]), ("Mul", [input, "\(prefix)/Add_output_0"]),
                ("Mul_1", ["\(prefix)/Mul_output_0", "\(prefix)/half"]),
            ]
            for step in steps {
                nodes.append(
                    Node(name: "\(prefix)/\(step.op)", opType: String(step.op.prefix(3)), inputs: step.inputs,
                         outputs: ["\(prefix)/\(step.op)_output_0"]))
            }
            return "\(prefix)/Mul_1_output_0"
        }
    }

    /// Reads an MLP back from an ONNX graph: a chain from the one input to the one output of
    /// `Gemm` (any `transB`, `alpha`, `beta`) or `MatMul` + `Add` layers with constant weights,
    /// one activation kind between them (Relu, Tanh, Sigmoid, Gelu or its opset-17
    /// decomposition), and Identity/Dropout anywhere. This reads our own exports and PyTorch's.
    /// Anything else is refused with the node that does not fit.
    public init(graph: ModelGraph, source: String) throws(TrainingError) {
        var reader = ChainReader(graph: graph, source: source)
        try self.init(reading: &reader)
    }

    private init(reading reader: inout ChainReader) throws(TrainingError) {
        let graph = reader.graph
        guard graph.inputs.count == 1, graph.outputs.count == 1 else {
            throw reader.fail("an MLP has one input and one output, this graph has \(graph.inputs.count) and \(graph.outputs.count)")
        }
        var layers: [(weight: [Float], bias: [Float], inputs: Int, outputs: Int)] = []
        var activations: [Activation] = []
        var current = graph.inputs[0].name
        var visited = 0
        while current != graph.outputs[0].name {
            // Each step consumes at least one node; more steps than nodes means a cycle.
            visited += 1
            guard visited <= graph.nodes.count else { throw reader.fail("the graph loops back on itself at '\(current)'") }
            let step = try reader.next(after: current)
            switch step.kind {
            case .passThrough: break
            case .layer(let weight, let bias, let inputs, let outputs):
                if let previous = layers.last, previous.outputs != inputs {
                    throw reader.fail("layer \(layers.count) takes \(inputs) inputs but the layer before it gives \(previous.outputs)")
                }
                if layers.count > activations.count { activations.append(.none) }
                layers.append((weight, bias, inputs, outputs))
            case .activation(let activation):
                guard layers.count > activations.count else {
                    throw reader.fail("\(step.label) is not between two Linear layers")
                }
                activations.append(activation)
            }
            current = step.output
        }
        guard !layers.isEmpty else { throw reader.fail("the graph has no Linear layer") }
        guard activations.count == layers.count - 1 else { throw reader.fail("the graph ends with an activation after its last layer") }
        guard Set(activations).count <= 1 else {
            throw reader.fail("layers use different activations (\(activations.map(\.rawValue).joined(separator: ", "))); an MLP here has one")
        }
        let sizes = [layers[0].inputs] + layers.map(\.outputs)
        let parameters = layers.flatMap { $0.weight + $0.bias }
        try self.init(layerSizes: sizes, activation: activations.first ?? .none, parameters: parameters)
    }
}

/// Walks a graph node by node from its input.
private struct ChainReader {
    let graph: ModelGraph
    let source: String
    private let consumers: [String: [Node]]
    private var constants: [String: Tensor]

    init(graph: ModelGraph, source: String) {
        self.graph = graph
        self.source = source
        var consumers: [String: [Node]] = [:]
        var constants = graph.initializers
        for node in graph.nodes {
            for input in Set(node.inputs) where !input.isEmpty { consumers[input, default: []].append(node) }
            if node.opType == "Constant", case .tensor(let value)? = node.attributes["value"], let output = node.outputs.first {
                constants[output] = value
            }
        }
        self.consumers = consumers
        self.constants = constants
    }

    func fail(_ message: String) -> TrainingError {
        TrainingError("\(source): not an MLP this trainer can start from: \(message)")
    }

    enum Kind {
        case layer(weight: [Float], bias: [Float], inputs: Int, outputs: Int)
        case activation(Activation)
        case passThrough
    }

    struct Step {
        var kind: Kind
        var output: String
        var label: String
    }

    func next(after value: String) throws(TrainingError) -> Step {
        let users = (consumers[value] ?? []).filter { $0.opType != "Constant" }
        if users.count == 2, let division = users.first(where: { $0.opType == "Div" }) {
            return try gelu(from: value, division: division)
        }
        if let broken = users.first(where: { $0.outputs.isEmpty || $0.outputs[0].isEmpty }) {
            throw fail("\(broken.label) has no output")
        }
        guard users.count == 1, let node = users.first else {
            throw fail(users.isEmpty ? "nothing uses '\(value)'" : "'\(value)' feeds \(users.count) nodes (\(users.map(\.label).joined(separator: ", "))), not a chain")
        }
        let output = node.outputs.first ?? ""
        switch node.opType {
        case "Identity", "Dropout":
            return Step(kind: .passThrough, output: output, label: node.label)
        case "Relu": return Step(kind: .activation(.relu), output: output, label: node.label)
        case "Tanh": return Step(kind: .activation(.tanh), output: output, label: node.label)
        case "Sigmoid": return Step(kind: .activation(.sigmoid), output: output, label: node.label)
        case "Gelu":
            if case .string(let approximate)? = node.attributes["approximate"], approximate != "none" {
                throw fail("\(node.label) uses the \(approximate) approximation; the trainer's GELU is exact")
            }
            return Step(kind: .activation(.gelu), output: output, label: node.label)
        case "Gemm":
            return try gemm(node, input: value)
        case "MatMul":
            return try matMul(node, input: value)
        default:
            throw fail("\(node.label) (\(node.opType)) is not a Linear layer or an activation")
        }
    }

    private func matrix(_ name: String, of node: Node) throws(TrainingError) -> Tensor {
        guard let tensor = constants[name] else { throw fail("\(node.label): '\(name)' is not a constant weight") }
        guard tensor.dataType == .float32 else { throw fail("\(node.label): '\(name)' is \(tensor.dataType), not float32") }
        return tensor
    }

    private func gemm(_ node: Node, input: String) throws(TrainingError) -> Step {
        func int(_ name: String) -> Int { if case .int(let v)? = node.attributes[name] { v } else { 0 } }
        func float(_ name: String) -> Float { if case .float(let v)? = node.attributes[name] { v } else { 1 } }
        guard node.inputs.count >= 2, node.inputs.first == input, int("transA") == 0 else {
            throw fail("\(node.label) does not multiply the data, untransposed, by a weight")
        }
        let w = try matrix(node.inputs[1], of: node)
        guard w.rank == 2 else { throw fail("\(node.label): weight '\(node.inputs[1])' has shape \(w.shape)") }
        let transposed = int("transB") == 1
        let (outputs, inputs) = transposed ? (w.shape[0], w.shape[1]) : (w.shape[1], w.shape[0])
        var weight = transposed ? w.scalars(as: Float.self) : transpose(w.scalars(as: Float.self), rows: inputs, columns: outputs)
        let alpha = float("alpha"), beta = float("beta")
        if alpha != 1 { weight = weight.map { $0 * alpha } }
        var bias = [Float](repeating: 0, count: outputs)
        if node.inputs.count > 2, !node.inputs[2].isEmpty {
            let b = try matrix(node.inputs[2], of: node)
            guard b.elementCount == outputs else { throw fail("\(node.label): bias '\(node.inputs[2])' has shape \(b.shape), expected [\(outputs)]") }
            bias = b.scalars(as: Float.self).map { $0 * beta }
        }
        return Step(kind: .layer(weight: weight, bias: bias, inputs: inputs, outputs: outputs), output: node.outputs[0], label: node.label)
    }

    private func matMul(_ node: Node, input: String) throws(TrainingError) -> Step {
        guard node.inputs.first == input, node.inputs.count == 2 else { throw fail("\(node.label) does not multiply the data by a weight") }
        let w = try matrix(node.inputs[1], of: node)
        guard w.rank == 2 else { throw fail("\(node.label): weight '\(node.inputs[1])' has shape \(w.shape)") }
        let (inputs, outputs) = (w.shape[0], w.shape[1])
        let weight = transpose(w.scalars(as: Float.self), rows: inputs, columns: outputs)
        var output = node.outputs[0]
        var bias = [Float](repeating: 0, count: outputs)
        let users = consumers[output] ?? []
        if users.count == 1, let add = users.first, add.opType == "Add", !add.outputs.isEmpty,
            let other = add.inputs.first(where: { $0 != output }), let b = constants[other], b.elementCount == outputs, b.dataType == .float32
        {
            bias = b.scalars(as: Float.self)
            output = add.outputs[0]
        }
        return Step(kind: .layer(weight: weight, bias: bias, inputs: inputs, outputs: outputs), output: output, label: node.label)
    }

    /// Div(x, √2) → Erf → Add(1) → Mul(x) → Mul(0.5): PyTorch's opset-17 GELU, and ours.
    private func gelu(from x: String, division: Node) throws(TrainingError) -> Step {
        func only(_ value: String, _ op: String) throws(TrainingError) -> Node {
            guard let users = consumers[value], users.count == 1, users[0].opType == op, !users[0].outputs.isEmpty else {
                throw fail("'\(value)' starts like a decomposed GELU (Div/Erf/Add/Mul/Mul) but is not followed by \(op)")
            }
            return users[0]
        }
        func scalar(_ node: Node, besides value: String) -> Float? {
            guard let name = node.inputs.first(where: { $0 != value }), let t = constants[name], t.elementCount == 1, t.dataType == .float32 else { return nil }
            return t.scalars(as: Float.self)[0]
        }
        let erf = try only(division.outputs[0], "Erf")
        let add = try only(erf.outputs[0], "Add")
        let mul = try only(add.outputs[0], "Mul")
        let half = try only(mul.outputs[0], "Mul")
        guard let root = scalar(division, besides: x), abs(root - Float(2).squareRoot()) < 1e-5,
            scalar(add, besides: erf.outputs[0]) == 1, mul.inputs.contains(x), scalar(half, besides: mul.outputs[0]) == 0.5
        else {
            throw fail("\(division.label) starts a Div/Erf/Add/Mul/Mul chain that is not GELU's x·0.5·(1 + erf(x/√2))")
        }
        return Step(kind: .activation(.gelu), output: half.outputs[0], label: "GELU at \(division.label)")
    }
}

private func transpose(_ values: [Float], rows: Int, columns: Int) -> [Float] {
    var result = [Float](repeating: 0, count: values.count)
    for r in 0..<rows {
        for c in 0..<columns { result[c * rows + r] = values[r * columns + c] }
    }
    return result
}

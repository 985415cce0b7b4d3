import MaaSCompute
public import MaaSCore

/// How far two float32 evaluations of one graph may be apart, from rounding-error analysis
/// rather than from what one CPU printed (the same rules as `Tests/interop/tolerance.py`).
///
/// - A sum of K products in any order, with or without FMA, is within γ_K·Σ|aᵢbᵢ| of the exact
///   value (Higham, *Accuracy and Stability of Numerical Algorithms*, eq. 3.5; γ_K = K·u/(1−K·u),
///   u = 2⁻²⁴), so two such results are within 2·γ_K·Σ|aᵢbᵢ|. For graphs of products with ReLU,
///   MaxPool and reshapes between them (monotone and 1-Lipschitz), the errors add up layer by
///   layer: 2·γ_D times the graph's output on |inputs| and |weights|, D the sum of the products'
///   K along the longest path. The worst case: the test ratio error / bound is at most 1.
/// - Other graphs are judged normwise, as LAPACK's test drivers do: error / (D·u·max|expected|)
///   at most 30, D counting each reduction's length and a few ulps per elementwise function.
///   Against the tensor's scale, values near zero cannot fail a correct result.
///
/// A wrong index, a missed bias or a wrong broadcast is off by about the values themselves,
/// 1/(D·u) ≈ 10⁴–10⁷ times these bounds. Integers are compared exactly.
public struct ErrorBound: Sendable {
    public static let unitRoundoff = 0x1p-24
    public static let normwiseThreshold = 30.0
    /// Ulps allowed per elementwise function evaluation on each side.
    public static let functionUlps = 4

    static let productOps: Set<String> = ["Gemm", "MatMul", "Conv"]
    static let magnitudeSafeOps = productOps.union([
        "Add", "Relu", "MaxPool", "Flatten", "Reshape", "Identity", "Transpose", "Concat", "Squeeze", "Unsqueeze",
        "Shape", "Gather", "Constant", "Dropout", "Cast",
    ])
    static let functions: Set<String> = [
        "Exp", "Log", "Tanh", "Sigmoid", "Erf", "Gelu", "Sqrt", "Pow", "Softmax", "LogSoftmax", "Reciprocal", "Div",
    ]

    /// The longest accumulation along any path to each output.
    public let depth: [String: Int]
    /// Σ|aᵢbᵢ| per output element, for graphs of products; nil when judged normwise.
    public let magnitudes: [String: Tensor]?

    /// Bounds for `graph` evaluated on `inputs` (the engine computes shapes and magnitudes).
    public init(graph: ModelGraph, inputs: [String: Tensor]) throws {
        depth = try Self.depths(graph, inputs: inputs)
        let ops = Set(graph.nodes.map(\.opType))
        if !ops.isDisjoint(with: Self.productOps), ops.isSubset(of: Self.magnitudeSafeOps) {
            magnitudes = try CompiledModel(graph: Self.absolute(graph)).run(inputs.mapValues(Self.absolute))
        } else {
            magnitudes = nil
        }
    }

    public static func gamma(_ n: Int) -> Double { Double(n) * unitRoundoff / (1 - Double(n) * unitRoundoff) }

    /// What a comparison found: the worst element, its test ratio (≤ 1 passes) and the rule.
    public struct Verdict: Sendable, CustomStringConvertible {
        public var ratio: Double
        public var index: Int
        public var actual: Double
        public var expected: Double
        public var rule: String
        public var passed: Bool { ratio <= 1 }
        public var description: String {
            "element \(index) is \(actual), expected \(expected): \(ratio) times the bound \(rule)"
        }
    }

    /// Compares `actual` with `expected` for output `name`; nil when shape or type differ.
    public func verdict(_ name: String, actual: Tensor, expected: Tensor) -> Verdict? {
        guard actual.shape == expected.shape, actual.dataType == expected.dataType else { return nil }
        guard expected.dataType == .float32 else {
            let same = actual.withUnsafeBytes { a in expected.withUnsafeBytes { e in a.elementsEqual(e) } }
            return Verdict(ratio: same ? 0 : .infinity, index: 0, actual: 0, expected: 0, rule: "exact")
        }
        let a = actual.scalars(as: Float.self), e = expected.scalars(as: Float.self)
        let d = depth[name] ?? 1
        let bound: (Int) -> Double
        let rule: String
        if let magnitude = magnitudes?[name]?.scalars(as: Float.self) {
            let factor = 2 * Self.gamma(d)
            bound = { factor * Double(magnitude[$0]) }
            rule = "2·γ_D·Σ|ab| (D = \(d))"
        } else {
            let scale = e.map { Double(abs($0)) }.max() ?? 0
            let normwise = Self.normwiseThreshold * Double(d) * Self.unitRoundoff * scale
            bound = { _ in normwise }
            rule = "\(Self.normwiseThreshold)·D·u·max|expected| (D = \(d))"
        }
        var worst = Verdict(ratio: 0, index: 0, actual: 0, expected: 0, rule: rule)
        for i in e.indices {
            let error = abs(Double(a[i]) - Double(e[i]))
            guard error > 0 else { continue }
            let ratio = error / bound(i)
            if ratio > worst.ratio || ratio.isNaN {
                worst = Verdict(ratio: ratio.isNaN ? .infinity : ratio, index: i, actual: Double(a[i]), expected: Double(e[i]), rule: rule)
            }
        }
        return worst
    }

    /// The graph with every float initializer and Gemm's alpha/beta made non-negative.
    static func absolute(_ graph: ModelGraph) -> ModelGraph {
        var result = graph
        result.initializers = graph.initializers.mapValues(absolute)
        for index in result.nodes.indices where result.nodes[index].opType == "Gemm" {
            for name in ["alpha", "beta"] {
                if case .float(let value) = result.nodes[index].attributes[name] { result.nodes[index].attributes[name] = .float(abs(value)) }
            }
        }
        return result
    }

    static func absolute(_ tensor: Tensor) -> Tensor {
        guard tensor.dataType == .float32 else { return tensor }
        return (try? Tensor(tensor.scalars(as: Float.self).map(abs), shape: tensor.shape)) ?? tensor
    }

    /// Accumulation depth per graph output, from the shapes the engine infers for every value.
    static func depths(_ graph: ModelGraph, inputs: [String: Tensor]) throws -> [String: Int] {
        var everything = graph
        let produced = graph.nodes.flatMap(\.outputs).filter { !$0.isEmpty }
        everything.outputs = produced.map { ValueInfo(name: $0, dataType: .float32, shape: []) }
        var shapes = try CompiledModel(graph: everything).outputShapes(for: inputs.mapValues(\.shape))
        for (name, tensor) in graph.initializers { shapes[name] = tensor.shape }
        for (name, tensor) in inputs { shapes[name] = tensor.shape }
        let opset = graph.opset(for: "") ?? 17
        var depth: [String: Int] = [:]
        // ONNX requires nodes in topological order.
        for node in graph.nodes {
            let before = node.inputs.compactMap { depth[$0] }.max() ?? 0
            let after = before + reductionLength(node, shapes: shapes, opset: opset)
            for output in node.outputs { depth[output] = after }
        }
        return Dictionary(uniqueKeysWithValues: graph.outputs.map { ($0.name, max(1, depth[$0.name] ?? 1)) })
    }

    /// How many rounded terms one output element of `node` sums (1 for elementwise arithmetic).
    static func reductionLength(_ node: Node, shapes: [String: [Int]], opset: Int) -> Int {
        func shape(_ i: Int) -> [Int] { i < node.inputs.count ? shapes[node.inputs[i]] ?? [] : [] }
        func int(_ name: String, _ fallback: Int) -> Int {
            if case .int(let value) = node.attributes[name] { return value }
            return fallback
        }
        func axis(_ value: Int, _ rank: Int) -> Int { value < 0 ? value + rank : value }
        let hasBias = node.inputs.count > 2 && !node.inputs[2].isEmpty ? 1 : 0
        let x = shape(0)
        switch node.opType {
        case "Gemm":
            let b = shape(1)
            return (int("transB", 0) != 0 ? b[1] : b[0]) + hasBias
        case "MatMul": return x.last ?? 1
        case "Conv": return shape(1).dropFirst().reduce(1, *) + hasBias
        case "Softmax", "LogSoftmax":
            let a = axis(int("axis", opset >= 13 ? -1 : 1), x.count)
            return (opset >= 13 ? x[a] : x[a...].reduce(1, *)) + functionUlps
        case "LayerNormalization":
            return 2 * x[axis(int("axis", -1), x.count)...].reduce(1, *) + functionUlps
        case "BatchNormalization": return 4 + functionUlps
        case "GlobalAveragePool": return x.dropFirst(2).reduce(1, *) + 1
        case "AveragePool":
            guard case .ints(let kernel) = node.attributes["kernel_shape"] else { return 1 }
            return kernel.reduce(1, *) + 1
        case let op where op.hasPrefix("Reduce"):
            let out = shapes[node.outputs[0]]?.reduce(1, *) ?? 1
            return max(1, x.reduce(1, *) / max(out, 1))
        case let op where functions.contains(op): return functionUlps
        default: return 1
        }
    }
}

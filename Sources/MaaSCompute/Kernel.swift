import MaaSCore

/// A value's element type and shape when a plan is built, and its contents if known then
/// (initializers, folded constants, the output of Shape).
struct ValueMeta {
    var dataType: DataType
    var shape: [Int]
    var constant: Tensor?

    init(_ dataType: DataType, _ shape: [Int], constant: Tensor? = nil) {
        self.dataType = dataType
        self.shape = shape
        self.constant = constant
    }

    init(constant: Tensor) {
        self.init(constant.dataType, constant.shape, constant: constant)
    }

    var count: Int { shape.reduce(1, *) }
}

/// A buffer as kernels see it while a plan runs: a pointer and a shape, owned by the plan.
struct TensorView {
    let base: UnsafeMutableRawPointer
    let shape: [Int]
    let dataType: DataType

    var count: Int { shape.reduce(1, *) }
    var floats: UnsafeMutablePointer<Float> { base.assumingMemoryBound(to: Float.self) }
    func pointer<T>(_: T.Type) -> UnsafeMutablePointer<T> { base.assumingMemoryBound(to: T.self) }
}

// Points into a plan's buffers, which outlive the run; kernels write disjoint ranges from pool threads.
extension TensorView: @unchecked Sendable {}

/// One operator, ready to run: attributes parsed and constant weights pre-packed at load.
protocol Kernel: Sendable {
    /// Output types and shapes for these inputs (nil = omitted optional input). Throws with a
    /// message naming what does not fit.
    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta]
    /// Computes the outputs into buffers shaped as ``outputs(_:)`` said.
    /// Throws only for data-dependent errors (an index out of range), before writing anything.
    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError)
    /// Output index → input index whose buffer it reuses unchanged (reshapes and identities).
    var aliases: [Int: Int] { get }
    /// Inputs whose constant values the kernel copied into its own layout at load and never
    /// reads again: a weight every reader has packed is dropped, so it is held once.
    var packedInputs: Set<Int> { get }
    /// This kernel with a following Relu folded into its output pass, if it can do that.
    func fusingRelu() -> (any Kernel)?
    /// It may call OpenBLAS, which is opened when such a kernel is built (``BLAS/require()``).
    var callsOpenBLAS: Bool { get }
}

extension Kernel {
    var aliases: [Int: Int] { [:] }
    var packedInputs: Set<Int> { [] }
    var callsOpenBLAS: Bool { false }

    /// This kernel with a following Relu folded into its output pass, if it can do that.
    func fusingRelu() -> (any Kernel)? { nil }
}

/// A kernel that can clamp its own output at zero, so a following Relu costs no extra pass.
protocol ReluFusing: Kernel {
    var relu: Bool { get set }
}

extension ReluFusing {
    func fusingRelu() -> (any Kernel)? {
        var fused = self
        fused.relu = true
        return fused
    }
}

/// What a kernel factory knows about a node: attributes with ONNX defaults, and the inputs
/// whose values are known at load.
struct NodeContext {
    let node: Node
    let opset: Int
    let constants: [Tensor?]

    func error(_ message: String) -> InferenceError {
        .invalidModel("\(node.label): \(message)")
    }

    func int(_ name: String, _ defaultValue: Int) throws(InferenceError) -> Int {
        switch node.attributes[name] {
        case nil: return defaultValue
        case .int(let value): return value
        default: throw error("attribute '\(name)' must be an int")
        }
    }

    func float(_ name: String, _ defaultValue: Float) throws(InferenceError) -> Float {
        switch node.attributes[name] {
        case nil: return defaultValue
        case .float(let value): return value
        case .int(let value): return Float(value)
        default: throw error("attribute '\(name)' must be a float")
        }
    }

    func ints(_ name: String) throws(InferenceError) -> [Int]? {
        switch node.attributes[name] {
        case nil: return nil
        case .ints(let values): return values
        default: throw error("attribute '\(name)' must be a list of ints")
        }
    }

    func string(_ name: String, _ defaultValue: String) throws(InferenceError) -> String {
        switch node.attributes[name] {
        case nil: return defaultValue
        case .string(let value): return value
        default: throw error("attribute '\(name)' must be a string")
        }
    }

    func tensor(_ name: String) throws(InferenceError) -> Tensor? {
        switch node.attributes[name] {
        case nil: return nil
        case .tensor(let value): return value
        default: throw error("attribute '\(name)' must be a tensor")
        }
    }

    func requireInputs(_ range: ClosedRange<Int>) throws(InferenceError) {
        let given = node.inputs.count
        guard range.contains(given) else {
            throw error("expects \(range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound)-\(range.upperBound)") inputs, got \(given)")
        }
    }
}

/// Normalizes an axis in `-rank..<rank`; a scalar has none (found by the onnx fuzz harness: axis
/// 0 of a rank-0 input was let through, and Slice read its size past the empty shape).
func normalizeAxis(_ axis: Int, rank: Int, _ what: @autoclosure () -> String) throws(InferenceError) -> Int {
    let normalized = axis < 0 ? axis + rank : axis
    guard normalized >= 0, normalized < rank else {
        throw .invalidInput("\(what()): axis \(axis) is out of range for rank \(rank)")
    }
    return normalized
}

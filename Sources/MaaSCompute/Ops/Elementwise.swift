import Glibc
import MaaSCore

/// Splits `0..<count` into chunks worth spreading over the pool (small counts run inline).
func forEachChunk(_ count: Int, pool: ComputePool, grain: Int = 1 << 15, _ body: (Range<Int>) -> Void) {
    let chunks = min(pool.threadCount, max(1, count / grain))
    if chunks <= 1 {
        body(0..<count)
        return
    }
    let size = (count + chunks - 1) / chunks
    pool.parallelFor(chunks) { chunk in
        let start = chunk * size
        body(start..<min(count, start + size))
    }
}

struct UnaryKernel: Kernel {
    enum Function { case relu, leakyRelu(Float), sigmoid, tanh, erf, gelu, geluTanh, neg, sqrt, exp, abs }
    let function: Function

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        switch context.node.opType {
        case "Relu": function = .relu
        case "LeakyRelu": function = .leakyRelu(try context.float("alpha", 0.01))
        case "Sigmoid": function = .sigmoid
        case "Tanh": function = .tanh
        case "Erf": function = .erf
        case "Gelu":
            switch try context.string("approximate", "none") {
            case "none": function = .gelu
            case "tanh": function = .geluTanh
            case let other: throw context.error("approximate '\(other)' is not 'none' or 'tanh'")
            }
        case "Neg": function = .neg
        case "Sqrt": function = .sqrt
        case "Exp": function = .exp
        default: function = .abs
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let input = inputs[0], input.dataType == .float32 else {
            throw .unsupported("expects a float32 input, got \(inputs[0].map { "\($0.dataType)" } ?? "none")")
        }
        return [ValueMeta(.float32, input.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let x = inputs[0]!.floats
        let y = outputs[0].floats
        let function = self.function
        forEachChunk(outputs[0].count, pool: pool) { range in
            switch function {
            case .relu: for i in range { y[i] = max(x[i], 0) }
            case .leakyRelu(let alpha): for i in range { y[i] = x[i] >= 0 ? x[i] : alpha * x[i] }
            case .sigmoid: for i in range { y[i] = 1 / (1 + expf(-x[i])) }
            case .tanh: for i in range { y[i] = tanhf(x[i]) }
            case .erf: for i in range { y[i] = erff(x[i]) }
            case .gelu: for i in range { y[i] = 0.5 * x[i] * (1 + erff(x[i] * 0.70710678118654752)) }
            case .geluTanh:
                for i in range {
                    let v = x[i]
                    y[i] = 0.5 * v * (1 + tanhf(0.79788456080286536 * (v + 0.044715 * v * v * v)))
                }
            case .neg: for i in range { y[i] = -x[i] }
            case .sqrt: for i in range { y[i] = sqrtf(x[i]) }
            case .exp: for i in range { y[i] = expf(x[i]) }
            case .abs: for i in range { y[i] = Swift.abs(x[i]) }
            }
        }
    }
}

/// Identity, and Dropout at inference (which is identity; its optional mask is all true).
struct IdentityKernel: Kernel {
    let isDropout: Bool

    init(_ context: NodeContext) throws(InferenceError) {
        isDropout = context.node.opType == "Dropout"
        try context.requireInputs(isDropout ? 1...3 : 1...1)
        if isDropout, context.opset < 12, try context.int("is_test", 1) == 0, context.opset < 7 {
            throw context.error("training-mode Dropout is not supported")
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let input = inputs[0] else { throw .invalidModel("missing input") }
        if isDropout, inputs.count > 2, let training = inputs[2] {
            guard let value = training.constant, value.dataType == .bool, value.scalars(as: UInt8.self).allSatisfy({ $0 == 0 }) else {
                throw .unsupported("training_mode Dropout is not supported (inference only)")
            }
        }
        var outputs = [ValueMeta(input.dataType, input.shape)]
        if isDropout {
            outputs.append(ValueMeta(.bool, input.shape))
        }
        return outputs
    }

    var aliases: [Int: Int] { [0: 0] }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        if outputs.count > 1 {
            outputs[1].pointer(UInt8.self).update(repeating: 1, count: outputs[1].count)
        }
    }
}

/// Add, Sub, Mul, Div with NumPy broadcasting, on float32, int64 and int32.
struct BinaryKernel: Kernel {
    enum Operation { case add, sub, mul, div }
    let operation: Operation
    let label: String

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        label = context.node.opType
        switch context.node.opType {
        case "Add": operation = .add
        case "Sub": operation = .sub
        case "Mul": operation = .mul
        default: operation = .div
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let a = inputs[0], let b = inputs[1] else { throw .invalidModel("missing input") }
        guard a.dataType == b.dataType else {
            throw .invalidInput("inputs have different types: \(a.dataType) and \(b.dataType)")
        }
        guard [.float32, .int64, .int32].contains(a.dataType) else {
            throw .unsupported("\(label) on \(a.dataType) is not supported")
        }
        guard let shape = Shape.broadcast(a.shape, b.shape) else {
            throw .invalidInput("shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        return [ValueMeta(a.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let a = inputs[0]!, b = inputs[1]!, y = outputs[0]
        switch y.dataType {
        case .float32:
            let op: @Sendable (Float, Float) -> Float
            switch operation {
            case .add: op = { $0 + $1 }
            case .sub: op = { $0 - $1 }
            case .mul: op = { $0 * $1 }
            case .div: op = { $0 / $1 }
            }
            broadcastApply(a, b, y, Float.self, pool: pool, op)
        case .int64:
            try integer(a, b, y, Int64.self, pool: pool)
        default:
            try integer(a, b, y, Int32.self, pool: pool)
        }
    }

    private func integer<T: FixedWidthInteger & Sendable>(_ a: TensorView, _ b: TensorView, _ y: TensorView, _: T.Type, pool: ComputePool) throws(InferenceError) {
        if operation == .div {
            let divisors = UnsafeBufferPointer(start: b.pointer(T.self), count: b.count)
            guard !divisors.contains(0) else { throw .invalidInput("integer division by zero") }
        }
        let op: @Sendable (T, T) -> T
        switch operation {
        case .add: op = { $0 &+ $1 }
        case .sub: op = { $0 &- $1 }
        case .mul: op = { $0 &* $1 }
        case .div: op = { $0 / $1 }
        }
        broadcastApply(a, b, y, T.self, pool: pool, op)
    }
}

/// y = op(a, b) elementwise with broadcasting; the common bias-add and scalar cases are direct.
func broadcastApply<T>(_ a: TensorView, _ b: TensorView, _ y: TensorView, _: T.Type, pool: ComputePool, _ op: @escaping @Sendable (T, T) -> T) {
    let pa = a.pointer(T.self), pb = b.pointer(T.self), py = y.pointer(T.self)
    let count = y.count
    if a.count == count && b.count == count {
        forEachChunk(count, pool: pool) { range in for i in range { py[i] = op(pa[i], pb[i]) } }
        return
    }
    if b.count == 1 {
        let scalar = pb[0]
        forEachChunk(count, pool: pool) { range in for i in range { py[i] = op(pa[i], scalar) } }
        return
    }
    if a.count == 1 {
        let scalar = pa[0]
        forEachChunk(count, pool: pool) { range in for i in range { py[i] = op(scalar, pb[i]) } }
        return
    }
    // General case: strides with zeros on broadcast dims; the last dim is the inner loop.
    let shape = y.shape
    let rank = shape.count
    func alignedStrides(_ dims: [Int]) -> [Int] {
        let padded = [Int](repeating: 1, count: rank - dims.count) + dims
        let strides = Shape.strides(padded)
        return (0..<rank).map { padded[$0] == 1 ? 0 : strides[$0] }
    }
    let sa = alignedStrides(a.shape), sb = alignedStrides(b.shape)
    let inner = shape.last ?? 1
    let rows = inner == 0 ? 0 : count / inner
    let ia = sa.last ?? 0, ib = sb.last ?? 0
    forEachChunk(rows, pool: pool, grain: max(1, (1 << 15) / max(inner, 1))) { range in
        for row in range {
            var offsetA = 0, offsetB = 0, rest = row
            for dim in stride(from: rank - 2, through: 0, by: -1) {
                let index = rest % shape[dim]
                rest /= shape[dim]
                offsetA += index * sa[dim]
                offsetB += index * sb[dim]
            }
            let out = py + row * inner
            for j in 0..<inner { out[j] = op(pa[offsetA + j * ia], pb[offsetB + j * ib]) }
        }
    }
}

/// Cast between float32, float64, int8/16/32/64, uint8/16/32/64 and bool.
struct CastKernel: Kernel {
    let target: DataType

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        let code = try context.int("to", 0)
        guard let target = DataType(onnxCode: Int32(truncatingIfNeeded: code)), target.byteSize != nil,
            target != .float16, target != .bfloat16
        else {
            throw context.error("cast to type \(code) is not supported")
        }
        self.target = target
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let input = inputs[0] else { throw .invalidModel("missing input") }
        guard input.dataType.byteSize != nil, input.dataType != .float16, input.dataType != .bfloat16 else {
            throw .unsupported("cast from \(input.dataType) is not supported")
        }
        return [ValueMeta(target, input.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let x = inputs[0]!, y = outputs[0]
        let count = y.count
        if x.dataType == y.dataType {
            y.base.copyMemory(from: x.base, byteCount: count * y.dataType.byteSize!)
            return
        }
        // Integers to integers keep exact values (no trip through Double).
        if let source = IntegerLane(x.dataType), let target = IntegerLane(y.dataType) {
            for i in 0..<count { target.store(source.load(x.base, i), y.base, i) }
            return
        }
        for i in 0..<count { storeDouble(loadDouble(x, i), y, i) }
    }

    private func loadDouble(_ view: TensorView, _ i: Int) -> Double {
        switch view.dataType {
        case .float32: Double(view.pointer(Float.self)[i])
        case .float64: view.pointer(Double.self)[i]
        default: Double(IntegerLane(view.dataType)!.load(view.base, i))
        }
    }

    private func storeDouble(_ value: Double, _ view: TensorView, _ i: Int) {
        switch view.dataType {
        case .float32: view.pointer(Float.self)[i] = Float(value)
        case .float64: view.pointer(Double.self)[i] = value
        case .bool: view.pointer(UInt8.self)[i] = value != 0 ? 1 : 0
        default:
            // Like C (and onnxruntime): truncate toward zero; NaN and out-of-range saturate.
            let clamped = value.isNaN ? 0 : Swift.min(Swift.max(value.rounded(.towardZero), -9.2233720368547758e18), 9.2233720368547748e18)
            IntegerLane(view.dataType)!.store(Int64(clamped), view.base, i)
        }
    }
}

/// Loads and stores any integer type (and bool) through Int64.
struct IntegerLane {
    let type: DataType

    init?(_ type: DataType) {
        switch type {
        case .int8, .int16, .int32, .int64, .uint8, .uint16, .uint32, .uint64, .bool: self.type = type
        default: return nil
        }
    }

    func load(_ base: UnsafeMutableRawPointer, _ i: Int) -> Int64 {
        switch type {
        case .int8: Int64(base.assumingMemoryBound(to: Int8.self)[i])
        case .int16: Int64(base.assumingMemoryBound(to: Int16.self)[i])
        case .int32: Int64(base.assumingMemoryBound(to: Int32.self)[i])
        case .int64: base.assumingMemoryBound(to: Int64.self)[i]
        case .uint8, .bool: Int64(base.assumingMemoryBound(to: UInt8.self)[i])
        case .uint16: Int64(base.assumingMemoryBound(to: UInt16.self)[i])
        case .uint32: Int64(base.assumingMemoryBound(to: UInt32.self)[i])
        default: Int64(bitPattern: base.assumingMemoryBound(to: UInt64.self)[i])
        }
    }

    func store(_ value: Int64, _ base: UnsafeMutableRawPointer, _ i: Int) {
        switch type {
        case .int8: base.assumingMemoryBound(to: Int8.self)[i] = Int8(truncatingIfNeeded: value)
        case .int16: base.assumingMemoryBound(to: Int16.self)[i] = Int16(truncatingIfNeeded: value)
        case .int32: base.assumingMemoryBound(to: Int32.self)[i] = Int32(truncatingIfNeeded: value)
        case .int64: base.assumingMemoryBound(to: Int64.self)[i] = value
        case .bool: base.assumingMemoryBound(to: UInt8.self)[i] = value != 0 ? 1 : 0
        case .uint8: base.assumingMemoryBound(to: UInt8.self)[i] = UInt8(truncatingIfNeeded: value)
        case .uint16: base.assumingMemoryBound(to: UInt16.self)[i] = UInt16(truncatingIfNeeded: value)
        case .uint32: base.assumingMemoryBound(to: UInt32.self)[i] = UInt32(truncatingIfNeeded: value)
        default: base.assumingMemoryBound(to: UInt64.self)[i] = UInt64(bitPattern: value)
        }
    }
}

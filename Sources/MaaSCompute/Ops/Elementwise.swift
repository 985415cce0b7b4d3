import CMaaSKernels
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
    enum Function { case relu, leakyRelu(Float), sigmoid, tanh, erf, gelu, geluTanh, neg, sqrt, exp, abs, log, reciprocal, floor, ceil, round, sin, cos, softplus }
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
        case "Log": function = .log
        case "Reciprocal": function = .reciprocal
        case "Floor": function = .floor
        case "Ceil": function = .ceil
        case "Round": function = .round
        case "Sin": function = .sin
        case "Cos": function = .cos
        case "Softplus": function = .softplus
        default: function = .abs
        }
    }

    var isTanhGelu: Bool {
        if case .geluTanh = function { true } else { false }
    }

    /// Neg and Abs also apply to integers (position arithmetic in the exports).
    var integerCapable: Bool {
        switch function {
        case .neg, .abs: true
        default: false
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let input = inputs[0], input.dataType == .float32 || (integerCapable && (input.dataType == .int64 || input.dataType == .int32)) else {
            throw .unsupported("expects a float32 input, got \(inputs[0].map { "\($0.dataType)" } ?? "none")")
        }
        return [ValueMeta(input.dataType, input.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        switch inputs[0]!.dataType {
        case .int64: return integer(inputs[0]!, outputs[0], Int64.self)
        case .int32: return integer(inputs[0]!, outputs[0], Int32.self)
        default: break
        }
        let x = inputs[0]!.floats
        let y = outputs[0].floats
        let function = self.function
        let tanhGelu: Int32 = isTanhGelu ? 1 : 0
        forEachChunk(outputs[0].count, pool: pool) { range in
            switch function {
            case .relu: for i in range { y[i] = max(x[i], 0) }
            case .leakyRelu(let alpha): for i in range { y[i] = x[i] >= 0 ? x[i] : alpha * x[i] }
            case .sigmoid: for i in range { y[i] = 1 / (1 + expf(-x[i])) }
            case .tanh: CMaaSKernels_map(x + range.lowerBound, y + range.lowerBound, range.count, CMaaSKernels_TANH)
            case .erf: CMaaSKernels_map(x + range.lowerBound, y + range.lowerBound, range.count, CMaaSKernels_ERF)
            case .gelu, .geluTanh:
                (y + range.lowerBound).update(from: x + range.lowerBound, count: range.count)
                CMaaSKernels_gelu(y + range.lowerBound, range.count, tanhGelu)
            case .neg: for i in range { y[i] = -x[i] }
            case .sqrt: for i in range { y[i] = sqrtf(x[i]) }
            case .exp: CMaaSKernels_map(x + range.lowerBound, y + range.lowerBound, range.count, CMaaSKernels_EXP)
            case .abs: for i in range { y[i] = Swift.abs(x[i]) }
            case .log: for i in range { y[i] = logf(x[i]) }
            case .reciprocal: for i in range { y[i] = 1 / x[i] }
            case .floor: for i in range { y[i] = floorf(x[i]) }
            case .ceil: for i in range { y[i] = ceilf(x[i]) }
            // ONNX rounds halves to even.
            case .round: for i in range { y[i] = x[i].rounded(.toNearestOrEven) }
            case .sin: for i in range { y[i] = sinf(x[i]) }
            case .cos: for i in range { y[i] = cosf(x[i]) }
            case .softplus: for i in range { y[i] = x[i] > 20 ? x[i] : log1pf(expf(x[i])) }
            }
        }
    }

    private func integer<T: FixedWidthInteger & SignedInteger>(_ input: TensorView, _ output: TensorView, _: T.Type) {
        let x = input.pointer(T.self), y = output.pointer(T.self)
        let negate = if case .neg = function { true } else { false }
        // Wrapping, as two's complement hardware (and onnxruntime) does for T.min.
        for i in 0..<output.count { y[i] = negate || x[i] < 0 ? 0 &- x[i] : x[i] }
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

import Glibc
import MaaSCore

/// ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare,
/// ReduceLogSumExp. Axes come from the attribute, or from the second input (ReduceSum from
/// opset 13, the others from 18), and must be known when the plan is built.
struct ReduceKernel: Kernel {
    enum Operation { case sum, mean, max, min, prod, l1, l2, sumSquare, logSumExp }
    let operation: Operation
    let label: String
    let axesAttribute: [Int]?
    let axesFromInput: Bool
    let keepDims: Bool
    let noopWithEmptyAxes: Bool

    init(_ context: NodeContext) throws(InferenceError) {
        label = context.node.opType
        switch label {
        case "ReduceSum": operation = .sum
        case "ReduceMean": operation = .mean
        case "ReduceMax": operation = .max
        case "ReduceMin": operation = .min
        case "ReduceProd": operation = .prod
        case "ReduceL1": operation = .l1
        case "ReduceL2": operation = .l2
        case "ReduceSumSquare": operation = .sumSquare
        default: operation = .logSumExp
        }
        axesFromInput = context.opset >= (operation == .sum ? 13 : 18)
        try context.requireInputs(axesFromInput ? 1...2 : 1...1)
        axesAttribute = axesFromInput ? nil : try context.ints("axes")
        keepDims = try context.int("keepdims", 1) != 0
        noopWithEmptyAxes = try context.int("noop_with_empty_axes", 0) != 0
    }

    /// The reduced axes, sorted; empty means none (noop_with_empty_axes).
    func axes(_ given: [Int]?, rank: Int) throws(InferenceError) -> [Int] {
        let axes = given ?? axesAttribute ?? []
        if axes.isEmpty { return noopWithEmptyAxes ? [] : Array(0..<rank) }
        var normalized: [Int] = []
        for axis in axes { normalized.append(try normalizeAxis(axis, rank: rank, label)) }
        guard Set(normalized).count == normalized.count else { throw .invalidInput("\(label) axes \(axes) repeat") }
        return normalized.sorted()
    }

    var floatOnly: Bool { [.mean, .l2, .logSumExp].contains(operation) }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0] else { throw .invalidModel("missing input") }
        let types: [DataType] = floatOnly ? [.float32] : [.float32, .int64, .int32]
        guard types.contains(x.dataType) else { throw .unsupported("\(label) on \(x.dataType) is not supported") }
        let given = axesFromInput && inputs.count > 1 && inputs[1] != nil ? try constantInts(inputs[1], "the axes input") : nil
        let axes = try self.axes(given, rank: x.shape.count)
        if (operation == .max || operation == .min), axes.contains(where: { x.shape[$0] == 0 }) {
            throw .invalidInput("\(label) over an empty axis")
        }
        var shape: [Int] = []
        for (dim, size) in x.shape.enumerated() {
            if !axes.contains(dim) { shape.append(size) } else if keepDims { shape.append(1) }
        }
        return [ValueMeta(x.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!, y = outputs[0]
        let given = axesFromInput && inputs.count > 1 ? viewInts(inputs[1]) : nil
        let axes = try self.axes(given, rank: x.shape.count)
        // Reduced and kept dims interleave in general; moving the reduced ones last gives
        // (kept, reduced) with the reduced elements of one output at fixed offsets.
        let strides = Shape.strides(x.shape)
        let kept = (0..<x.shape.count).filter { !axes.contains($0) }
        let reducedOffsets = ReducedElements(shape: axes.map { x.shape[$0] }, strides: axes.map { strides[$0] })
        let keptShape = kept.map { x.shape[$0] }, keptStrides = kept.map { strides[$0] }
        switch x.dataType {
        case .float32: reduceFloat(x.floats, y.floats, y.count, keptShape, keptStrides, reducedOffsets, pool: pool)
        case .int64: reduceInteger(x.pointer(Int64.self), y.pointer(Int64.self), y.count, keptShape, keptStrides, reducedOffsets)
        default: reduceInteger(x.pointer(Int32.self), y.pointer(Int32.self), y.count, keptShape, keptStrides, reducedOffsets)
        }
    }

    /// Where the i-th reduced element of one output lies from that output's first: i itself
    /// when the reduced axes are the trailing ones (norms, pooling, reducing everything), a table
    /// for small interleaved sets, and index arithmetic beyond that, so no table grows with the
    /// input.
    struct ReducedElements {
        let count: Int
        let contiguous: Bool
        let shape: [Int], strides: [Int]
        let table: [Int]?

        init(shape: [Int], strides: [Int]) {
            self.shape = shape
            self.strides = strides
            count = shape.reduce(1, *)
            var expected = 1
            var contiguous = true
            for (size, stride) in zip(shape, strides).reversed() {
                if size != 1 && stride != expected { contiguous = false }
                expected *= size
            }
            self.contiguous = contiguous
            if contiguous || count > 1 << 16 {
                table = nil
            } else {
                var result = [0]
                for (size, stride) in zip(shape, strides) {
                    result = result.flatMap { base in (0..<size).map { base + $0 * stride } }
                }
                table = result
            }
        }

        @inline(__always) func offset(_ i: Int) -> Int {
            if contiguous { return i }
            if let table { return table[i] }
            return start(i, shape, strides)
        }
    }

    static func start(_ output: Int, _ shape: [Int], _ strides: [Int]) -> Int {
        var offset = 0, rest = output
        for dim in stride(from: shape.count - 1, through: 0, by: -1) {
            offset += (rest % shape[dim]) * strides[dim]
            rest /= shape[dim]
        }
        return offset
    }

    private func reduceFloat(
        _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int,
        _ keptShape: [Int], _ keptStrides: [Int], _ reduced: ReducedElements, pool: ComputePool
    ) {
        let operation = self.operation
        let length = reduced.count
        forEachChunk(count, pool: pool, grain: max(1, (1 << 15) / max(length, 1))) { range in
            for output in range {
                let base = x + Self.start(output, keptShape, keptStrides)
                @inline(__always) func value(_ i: Int) -> Float { base[reduced.offset(i)] }
                var result: Float
                switch operation {
                case .sum, .mean:
                    result = 0
                    for i in 0..<length { result += value(i) }
                    if operation == .mean { result /= Float(length) }
                case .max:
                    result = -.infinity
                    for i in 0..<length { let v = value(i); result = v.isNaN || v > result ? v : result; if v.isNaN { break } }
                case .min:
                    result = .infinity
                    for i in 0..<length { let v = value(i); result = v.isNaN || v < result ? v : result; if v.isNaN { break } }
                case .prod:
                    result = 1
                    for i in 0..<length { result *= value(i) }
                case .l1:
                    result = 0
                    for i in 0..<length { result += abs(value(i)) }
                case .l2, .sumSquare:
                    result = 0
                    for i in 0..<length { let v = value(i); result += v * v }
                    if operation == .l2 { result = sqrtf(result) }
                case .logSumExp:
                    var maximum = -Float.infinity
                    for i in 0..<length { maximum = Swift.max(maximum, value(i)) }
                    var sum: Float = 0
                    for i in 0..<length { sum += expf(value(i) - maximum) }
                    result = maximum.isFinite ? maximum + logf(sum) : logf(sum) + maximum
                }
                y[output] = result
            }
        }
    }

    private func reduceInteger<T: FixedWidthInteger>(
        _ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ count: Int,
        _ keptShape: [Int], _ keptStrides: [Int], _ reduced: ReducedElements
    ) {
        for output in 0..<count {
            let base = x + Self.start(output, keptShape, keptStrides)
            let values = (0..<reduced.count).lazy.map { base[reduced.offset($0)] }
            var result: T
            switch operation {
            case .max: result = values.reduce(T.min) { Swift.max($0, $1) }
            case .min: result = values.reduce(T.max) { Swift.min($0, $1) }
            case .prod: result = values.reduce(1) { $0 &* $1 }
            case .l1: result = values.reduce(0) { $0 &+ ($1 < 0 ? 0 &- $1 : $1) }
            case .sumSquare: result = values.reduce(0) { $0 &+ $1 &* $1 }
            default: result = values.reduce(0) { $0 &+ $1 }
            }
            y[output] = result
        }
    }
}

/// CumSum along an axis given as a (plan-time) input; exclusive and reverse as in ONNX.
struct CumSumKernel: Kernel {
    let exclusive: Bool
    let reverse: Bool

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        exclusive = try context.int("exclusive", 0) != 0
        reverse = try context.int("reverse", 0) != 0
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0] else { throw .invalidModel("missing input") }
        guard arithmeticTypes.contains(x.dataType) else { throw .unsupported("CumSum on \(x.dataType) is not supported") }
        let axis = try constantInts(inputs[1], "the axis input")
        guard axis.count == 1 else { throw .invalidInput("CumSum axis must be a scalar, got \(axis)") }
        _ = try normalizeAxis(axis[0], rank: x.shape.count, "CumSum")
        return [ValueMeta(x.dataType, x.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!, y = outputs[0]
        let axis = try normalizeAxis(viewInts(inputs[1])?.first ?? 0, rank: x.shape.count, "CumSum")
        switch x.dataType {
        case .float32: scan(x, y, axis, Float.self)
        case .float64: scan(x, y, axis, Double.self)
        case .int64: scan(x, y, axis, Int64.self)
        default: scan(x, y, axis, Int32.self)
        }
    }

    private func scan<T: AdditiveArithmetic>(_ x: TensorView, _ y: TensorView, _ axis: Int, _: T.Type) {
        let px = x.pointer(T.self), py = y.pointer(T.self)
        let outer = x.shape[..<axis].reduce(1, *), length = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
        for o in 0..<outer {
            for i in 0..<inner {
                var running = T.zero
                for step in 0..<length {
                    let j = reverse ? length - 1 - step : step
                    let at = (o * length + j) * inner + i
                    if exclusive {
                        py[at] = running
                        running = running + px[at]
                    } else {
                        running = running + px[at]
                        py[at] = running
                    }
                }
            }
        }
    }
}

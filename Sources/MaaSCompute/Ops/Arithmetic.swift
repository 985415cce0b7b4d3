import Glibc
import MaaSCore

/// The element types arithmetic runs on (bool and the narrow integers only reach the graph's
/// edges through Cast in the exports we load).
let arithmeticTypes: [DataType] = [.float32, .float64, .int64, .int32]

/// Add, Sub, Mul, Div, Pow and Mod with NumPy broadcasting.
struct BinaryKernel: Kernel {
    enum Operation { case add, sub, mul, div, pow, mod, fmod }
    let operation: Operation
    let label: String

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        label = context.node.opType
        switch context.node.opType {
        case "Add": operation = .add
        case "Sub": operation = .sub
        case "Mul": operation = .mul
        case "Div": operation = .div
        case "Pow": operation = .pow
        default: operation = try context.int("fmod", 0) != 0 ? .fmod : .mod
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let a = inputs[0], let b = inputs[1] else { throw .invalidModel("missing input") }
        if operation == .pow {
            // Pow's exponent may have its own numeric type (opset 12+).
            guard [.float32, .float64].contains(a.dataType), arithmeticTypes.contains(b.dataType) else {
                throw .unsupported("Pow of \(a.dataType) to \(b.dataType) is not supported (float32/float64 bases)")
            }
        } else {
            guard a.dataType == b.dataType else {
                throw .invalidInput("inputs have different types: \(a.dataType) and \(b.dataType)")
            }
            guard arithmeticTypes.contains(a.dataType) else {
                throw .unsupported("\(label) on \(a.dataType) is not supported")
            }
            if operation == .mod, a.dataType == .float32 || a.dataType == .float64 {
                throw .invalidModel("Mod on floating-point inputs needs fmod=1")
            }
        }
        guard let shape = Shape.broadcast(a.shape, b.shape) else {
            throw .invalidInput("shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        return [ValueMeta(a.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let a = inputs[0]!, b = inputs[1]!, y = outputs[0]
        if operation == .pow { return power(a, b, y, pool: pool) }
        switch y.dataType {
        case .float32: floating(a, b, y, Float.self, pool: pool)
        case .float64: floating(a, b, y, Double.self, pool: pool)
        case .int64: try integer(a, b, y, Int64.self, pool: pool)
        default: try integer(a, b, y, Int32.self, pool: pool)
        }
    }

    private func floating<T: BinaryFloatingPoint & Sendable>(_ a: TensorView, _ b: TensorView, _ y: TensorView, _: T.Type, pool: ComputePool) {
        let op: @Sendable (T, T) -> T
        switch operation {
        case .add: op = { $0 + $1 }
        case .sub: op = { $0 - $1 }
        case .mul: op = { $0 * $1 }
        case .div: op = { $0 / $1 }
        default: op = { $0.truncatingRemainder(dividingBy: $1) }  // C's fmod: the sign of the dividend
        }
        broadcastApply(a, b, y, pool: pool, op)
    }

    private func integer<T: FixedWidthInteger & Sendable>(_ a: TensorView, _ b: TensorView, _ y: TensorView, _: T.Type, pool: ComputePool) throws(InferenceError) {
        if operation == .div || operation == .mod || operation == .fmod {
            let divisors = UnsafeBufferPointer(start: b.pointer(T.self), count: b.count)
            guard !divisors.contains(0) else { throw .invalidInput("integer \(label) by zero") }
        }
        let op: @Sendable (T, T) -> T
        switch operation {
        case .add: op = { $0 &+ $1 }
        case .sub: op = { $0 &- $1 }
        case .mul: op = { $0 &* $1 }
        // ONNX integer Div truncates (as C and onnxruntime do); Int.min / -1 wraps instead of trapping.
        case .div: op = { $0.dividedReportingOverflow(by: $1).partialValue }
        case .fmod: op = { $0.remainderReportingOverflow(dividingBy: $1).partialValue }
        default:
            // Mod with fmod=0: the result takes the divisor's sign, as Python's %.
            op = { x, d in
                let r = x.remainderReportingOverflow(dividingBy: d).partialValue
                return r != 0 && (r < 0) != (d < 0) ? r &+ d : r
            }
        }
        broadcastApply(a, b, y, pool: pool, op)
    }

    private func power(_ a: TensorView, _ b: TensorView, _ y: TensorView, pool: ComputePool) {
        switch b.dataType {
        case .float32: power(a, b, y, pool: pool) { (e: Float) in Double(e) }
        case .float64: power(a, b, y, pool: pool) { (e: Double) in e }
        case .int64: power(a, b, y, pool: pool) { (e: Int64) in Double(e) }
        default: power(a, b, y, pool: pool) { (e: Int32) in Double(e) }
        }
    }

    private func power<E>(_ a: TensorView, _ b: TensorView, _ y: TensorView, pool: ComputePool, _ exponent: @escaping @Sendable (E) -> Double) {
        if a.dataType == .float32 {
            // x² and x³ (a decomposed LayerNorm's variance, GPT-2's tanh GELU) as plain products,
            // as onnxruntime computes them.
            broadcastApply(a, b, y, pool: pool) { (x: Float, raw: E) -> Float in
                let e = exponent(raw)
                return e == 2 ? x * x : e == 3 ? x * x * x : e == 0.5 ? sqrtf(x) : e == 1 ? x : powf(x, Float(e))
            }
        } else {
            broadcastApply(a, b, y, pool: pool) { (x: Double, raw: E) -> Double in
                let e = exponent(raw)
                return e == 2 ? x * x : e == 3 ? x * x * x : Glibc.pow(x, e)
            }
        }
    }
}

/// Max, Min, Sum and Mean over one or more inputs with broadcasting.
struct VariadicKernel: Kernel {
    enum Operation { case max, min, sum, mean }
    let operation: Operation
    let label: String

    init(_ context: NodeContext) throws(InferenceError) {
        guard !context.node.inputs.isEmpty else { throw context.error("needs at least one input") }
        label = context.node.opType
        switch label {
        case "Max": operation = .max
        case "Min": operation = .min
        case "Sum": operation = .sum
        default: operation = .mean
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        let metas = inputs.compactMap { $0 }
        guard let first = metas.first else { throw .invalidModel("missing input") }
        guard metas.allSatisfy({ $0.dataType == first.dataType }) else {
            throw .invalidInput("inputs have different types: \(metas.map(\.dataType))")
        }
        let types: [DataType] = operation == .mean ? [.float32, .float64] : arithmeticTypes
        guard types.contains(first.dataType) else { throw .unsupported("\(label) on \(first.dataType) is not supported") }
        var shape = first.shape
        for meta in metas.dropFirst() {
            guard let joined = Shape.broadcast(shape, meta.shape) else {
                throw .invalidInput("shapes \(metas.map(\.shape)) do not broadcast")
            }
            shape = joined
        }
        return [ValueMeta(first.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let operands = inputs.compactMap { $0 }, y = outputs[0]
        broadcastCopy(operands[0], into: y, pool: pool)
        for operand in operands.dropFirst() {
            switch y.dataType {
            case .float32: combine(operand, y, Float.self, pool: pool)
            case .float64: combine(operand, y, Double.self, pool: pool)
            case .int64: combine(operand, y, Int64.self, pool: pool)
            default: combine(operand, y, Int32.self, pool: pool)
            }
        }
        if operation == .mean, operands.count > 1 {
            let scale = 1 / Double(operands.count)
            if y.dataType == .float32 {
                let p = y.floats
                for i in 0..<y.count { p[i] = Float(Double(p[i]) * scale) }
            } else {
                let p = y.pointer(Double.self)
                for i in 0..<y.count { p[i] *= scale }
            }
        }
    }

    private func combine<T: Comparable & Numeric & Sendable>(_ x: TensorView, _ y: TensorView, _: T.Type, pool: ComputePool) {
        let op: @Sendable (T, T) -> T
        switch operation {
        // NaN propagates through Max and Min, as in onnxruntime.
        case .max: op = { $0 != $0 ? $0 : $1 != $1 ? $1 : Swift.max($0, $1) }
        case .min: op = { $0 != $0 ? $0 : $1 != $1 ? $1 : Swift.min($0, $1) }
        default: op = { $0 + $1 }
        }
        broadcastApply(y, x, y, pool: pool, op)
    }
}

/// Clip to [min, max]: attributes before opset 11, optional scalar inputs from 11 on.
struct ClipKernel: Kernel {
    let attributeBounds: (Float, Float)?

    init(_ context: NodeContext) throws(InferenceError) {
        if context.opset < 11 {
            try context.requireInputs(1...1)
            attributeBounds = (try context.float("min", -Float.greatestFiniteMagnitude), try context.float("max", Float.greatestFiniteMagnitude))
        } else {
            try context.requireInputs(1...3)
            attributeBounds = nil
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0] else { throw .invalidModel("missing input") }
        guard arithmeticTypes.contains(x.dataType) else { throw .unsupported("Clip on \(x.dataType) is not supported") }
        for index in 1..<inputs.count {
            guard let bound = inputs[index] else { continue }
            guard bound.count == 1, bound.dataType == x.dataType else {
                throw .invalidInput("Clip's \(index == 1 ? "min" : "max") must be a \(x.dataType) scalar, got \(bound.dataType) \(bound.shape)")
            }
        }
        return [ValueMeta(x.dataType, x.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let x = inputs[0]!, y = outputs[0]
        func bound<T>(_ index: Int, _: T.Type) -> T? { index < inputs.count ? inputs[index].map { $0.pointer(T.self)[0] } : nil }
        switch x.dataType {
        case .float32:
            let low = bound(1, Float.self) ?? attributeBounds?.0 ?? -.infinity
            let high = bound(2, Float.self) ?? attributeBounds?.1 ?? .infinity
            clamp(x, y, low, high, pool: pool)
        case .float64: clamp(x, y, bound(1, Double.self) ?? -.infinity, bound(2, Double.self) ?? .infinity, pool: pool)
        case .int64: clamp(x, y, bound(1, Int64.self) ?? .min, bound(2, Int64.self) ?? .max, pool: pool)
        default: clamp(x, y, bound(1, Int32.self) ?? .min, bound(2, Int32.self) ?? .max, pool: pool)
        }
    }

    private func clamp<T: Comparable>(_ x: TensorView, _ y: TensorView, _ low: T, _ high: T, pool: ComputePool) {
        let px = x.pointer(T.self), py = y.pointer(T.self)
        // NaN stays NaN (comparisons with it are false), as in onnxruntime.
        forEachChunk(y.count, pool: pool) { range in
            for i in range {
                let v = px[i]
                py[i] = v < low ? low : v > high ? high : v
            }
        }
    }
}

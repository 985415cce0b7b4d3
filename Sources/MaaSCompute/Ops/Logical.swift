import MaaSCore

/// Equal, Less, LessOrEqual, Greater, GreaterOrEqual with broadcasting: bool out. Equal also
/// takes bool inputs (the exporters compare masks).
struct CompareKernel: Kernel {
    enum Relation { case equal, less, lessOrEqual, greater, greaterOrEqual }
    let relation: Relation
    let label: String

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        label = context.node.opType
        switch label {
        case "Equal": relation = .equal
        case "Less": relation = .less
        case "LessOrEqual": relation = .lessOrEqual
        case "Greater": relation = .greater
        default: relation = .greaterOrEqual
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let a = inputs[0], let b = inputs[1] else { throw .invalidModel("missing input") }
        guard a.dataType == b.dataType else { throw .invalidInput("inputs have different types: \(a.dataType) and \(b.dataType)") }
        guard arithmeticTypes.contains(a.dataType) || (relation == .equal && a.dataType == .bool) else {
            throw .unsupported("\(label) on \(a.dataType) is not supported")
        }
        guard let shape = Shape.broadcast(a.shape, b.shape) else {
            throw .invalidInput("shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        return [ValueMeta(.bool, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let a = inputs[0]!, b = inputs[1]!, y = outputs[0]
        switch a.dataType {
        case .float32: compare(a, b, y, Float.self, pool: pool)
        case .float64: compare(a, b, y, Double.self, pool: pool)
        case .int64: compare(a, b, y, Int64.self, pool: pool)
        case .int32: compare(a, b, y, Int32.self, pool: pool)
        default: compare(a, b, y, UInt8.self, pool: pool)
        }
    }

    private func compare<T: Comparable & Sendable>(_ a: TensorView, _ b: TensorView, _ y: TensorView, _: T.Type, pool: ComputePool) {
        let op: @Sendable (T, T) -> UInt8
        switch relation {
        case .equal: op = { $0 == $1 ? 1 : 0 }
        case .less: op = { $0 < $1 ? 1 : 0 }
        case .lessOrEqual: op = { $0 <= $1 ? 1 : 0 }
        case .greater: op = { $0 > $1 ? 1 : 0 }
        case .greaterOrEqual: op = { $0 >= $1 ? 1 : 0 }
        }
        broadcastApply(a, b, y, pool: pool, op)
    }
}

/// And, Or, Xor on bool tensors with broadcasting; Not.
struct LogicalKernel: Kernel {
    enum Operation { case and, or, xor, not }
    let operation: Operation

    init(_ context: NodeContext) throws(InferenceError) {
        switch context.node.opType {
        case "And": operation = .and
        case "Or": operation = .or
        case "Xor": operation = .xor
        default: operation = .not
        }
        try context.requireInputs(operation == .not ? 1...1 : 2...2)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        let metas = inputs.compactMap { $0 }
        guard metas.count == inputs.count, let first = metas.first else { throw .invalidModel("missing input") }
        guard metas.allSatisfy({ $0.dataType == .bool }) else {
            throw .invalidInput("expects bool inputs, got \(metas.map(\.dataType))")
        }
        guard metas.count == 1 else {
            guard let shape = Shape.broadcast(first.shape, metas[1].shape) else {
                throw .invalidInput("shapes \(first.shape) and \(metas[1].shape) do not broadcast")
            }
            return [ValueMeta(.bool, shape)]
        }
        return [ValueMeta(.bool, first.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let y = outputs[0]
        // Bools are stored as 0 or 1 (inputs are checked where they enter), so bit operations are exact.
        switch operation {
        case .and: broadcastApply(inputs[0]!, inputs[1]!, y, pool: pool) { (a: UInt8, b: UInt8) -> UInt8 in a & b }
        case .or: broadcastApply(inputs[0]!, inputs[1]!, y, pool: pool) { (a: UInt8, b: UInt8) -> UInt8 in a | b }
        case .xor: broadcastApply(inputs[0]!, inputs[1]!, y, pool: pool) { (a: UInt8, b: UInt8) -> UInt8 in a ^ b }
        case .not:
            let x = inputs[0]!.pointer(UInt8.self), out = y.pointer(UInt8.self)
            for i in 0..<y.count { out[i] = x[i] ^ 1 }
        }
    }
}

/// IsNaN and IsInf (detect_positive/detect_negative) on float tensors.
struct FloatClassKernel: Kernel {
    let isNaN: Bool
    let positive: Bool
    let negative: Bool

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        isNaN = context.node.opType == "IsNaN"
        positive = try context.int("detect_positive", 1) != 0
        negative = try context.int("detect_negative", 1) != 0
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0] else { throw .invalidModel("missing input") }
        guard x.dataType == .float32 || x.dataType == .float64 else {
            throw .unsupported("\(isNaN ? "IsNaN" : "IsInf") on \(x.dataType) is not supported")
        }
        return [ValueMeta(.bool, x.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let x = inputs[0]!, y = outputs[0].pointer(UInt8.self)
        func classify(_ value: Double) -> UInt8 {
            if isNaN { return value.isNaN ? 1 : 0 }
            return value.isInfinite && (value > 0 ? positive : negative) ? 1 : 0
        }
        if x.dataType == .float32 {
            let p = x.floats
            for i in 0..<x.count { y[i] = classify(Double(p[i])) }
        } else {
            let p = x.pointer(Double.self)
            for i in 0..<x.count { y[i] = classify(p[i]) }
        }
    }
}

/// Where(condition, X, Y) with broadcasting over all three, for any fixed-size element type.
struct WhereKernel: Kernel {
    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(3...3)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let condition = inputs[0], let x = inputs[1], let y = inputs[2] else { throw .invalidModel("missing input") }
        guard condition.dataType == .bool else { throw .invalidInput("condition must be bool, got \(condition.dataType)") }
        guard x.dataType == y.dataType, x.dataType.byteSize != nil else {
            throw .invalidInput("X and Y must have one fixed-size type, got \(x.dataType) and \(y.dataType)")
        }
        guard let xy = Shape.broadcast(x.shape, y.shape), let shape = Shape.broadcast(condition.shape, xy) else {
            throw .invalidInput("shapes \(condition.shape), \(x.shape) and \(y.shape) do not broadcast")
        }
        return [ValueMeta(x.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let c = inputs[0]!, x = inputs[1]!, y = inputs[2]!, out = outputs[0]
        switch out.dataType.byteSize! {
        case 8: select(c, x, y, out, UInt64.self, pool: pool)
        case 4: select(c, x, y, out, UInt32.self, pool: pool)
        case 2: select(c, x, y, out, UInt16.self, pool: pool)
        default: select(c, x, y, out, UInt8.self, pool: pool)
        }
    }

    /// Moves bit patterns: a select never needs to know what the bits mean.
    private func select<T>(_ c: TensorView, _ x: TensorView, _ y: TensorView, _ out: TensorView, _: T.Type, pool: ComputePool) {
        broadcastApply(c, x, y, out, pool: pool) { (condition: UInt8, a: T, b: T) -> T in condition != 0 ? a : b }
    }
}

import MaaSCore

/// The most elements ConstantOfShape or Range may produce: their sizes come from the model or
/// from request shapes, and must not turn into an allocation the machine cannot make.
let maxGeneratedElements = 1 << 28

// Neither generator allocates in `outputs`: their input is always known when the plan is built,
// so the caller folds them through `CompiledModel.evaluate`, which checks the size against the
// plan memory budget first (a 60-byte model of ConstantOfShape nodes asked for 2 GiB each).

/// ConstantOfShape: a tensor of the given (plan-time) shape filled with `value` (float 0 by default).
struct ConstantOfShapeKernel: Kernel {
    let value: Tensor

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        let given: Tensor
        if let attribute = try context.tensor("value") { given = attribute } else { given = try Tensor([Float(0)], shape: [1]) }
        guard given.elementCount == 1, given.dataType.byteSize != nil else {
            throw context.error("value must be a one-element tensor, got \(given.dataType) \(given.shape)")
        }
        value = given
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        let shape = try constantInts(inputs[0], "the shape input")
        let count = try Shape.elementCount(shape)
        guard count <= maxGeneratedElements else { throw InferenceError(.resourceExhausted, "ConstantOfShape of \(shape) is too large") }
        return [ValueMeta(value.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let out = outputs[0]
        let size = value.dataType.byteSize!
        let total = out.count * size
        guard total > 0 else { return }
        value.withUnsafeBytes { source in out.base.copyMemory(from: source.baseAddress!, byteCount: size) }
        // Doubling copies: log2(count) memcpy calls.
        var filled = size
        while filled < total {
            let chunk = min(filled, total - filled)
            (out.base + filled).copyMemory(from: out.base, byteCount: chunk)
            filled += chunk
        }
    }
}

/// Range(start, limit, delta) of scalars known when the plan is built, as int64, int32,
/// float32 or float64.
struct RangeKernel: Kernel {
    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(3...3)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        var scalars: [Tensor] = []
        for (index, name) in ["start", "limit", "delta"].enumerated() {
            guard let constant = inputs[index]?.constant, constant.elementCount == 1 else {
                throw .unsupported("Range's \(name) must be a scalar known when the plan is built")
            }
            scalars.append(constant)
        }
        let type = scalars[0].dataType
        guard scalars.allSatisfy({ $0.dataType == type }) else {
            throw .invalidInput("Range's inputs have different types: \(scalars.map(\.dataType))")
        }
        let span: Double, delta: Double
        switch type {
        case .int64:
            let v = scalars.map { $0.scalars(as: Int64.self)[0] }
            (span, delta) = (Double(v[1]) - Double(v[0]), Double(v[2]))
        case .int32:
            let v = scalars.map { $0.scalars(as: Int32.self)[0] }
            (span, delta) = (Double(v[1]) - Double(v[0]), Double(v[2]))
        case .float32:
            let v = scalars.map { Double($0.scalars(as: Float.self)[0]) }
            (span, delta) = (v[1] - v[0], v[2])
        case .float64:
            let v = scalars.map { $0.scalars(as: Double.self)[0] }
            (span, delta) = (v[1] - v[0], v[2])
        default: throw .unsupported("Range of \(type) is not supported")
        }
        return [ValueMeta(type, [try count(span, delta)])]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let out = outputs[0]
        let n = out.count
        switch out.dataType {
        case .int64, .int32:
            func scalar(_ index: Int) -> Int64 {
                out.dataType == .int64 ? inputs[index]!.pointer(Int64.self).pointee : Int64(inputs[index]!.pointer(Int32.self).pointee)
            }
            let (start, delta) = (scalar(0), scalar(2))
            for i in 0..<n {
                let value = start &+ Int64(i) &* delta
                if out.dataType == .int64 { out.pointer(Int64.self)[i] = value } else { out.pointer(Int32.self)[i] = Int32(truncatingIfNeeded: value) }
            }
        default:
            func scalar(_ index: Int) -> Double {
                out.dataType == .float64 ? inputs[index]!.pointer(Double.self).pointee : Double(inputs[index]!.pointer(Float.self).pointee)
            }
            let (start, delta) = (scalar(0), scalar(2))
            for i in 0..<n {
                let value = start + Double(i) * delta
                if out.dataType == .float64 { out.pointer(Double.self)[i] = value } else { out.floats[i] = Float(value) }
            }
        }
    }

    private func count(_ span: Double, _ delta: Double) throws(InferenceError) -> Int {
        guard delta != 0 else { throw .invalidInput("Range's delta is 0") }
        let count = Swift.max(0, (span / delta).rounded(.up))
        guard count <= Double(maxGeneratedElements) else { throw InferenceError(.resourceExhausted, "Range of \(count) elements is too large") }
        return Int(count)
    }
}

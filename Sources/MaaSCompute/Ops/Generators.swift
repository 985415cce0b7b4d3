import MaaSCore

/// The most elements ConstantOfShape or Range may produce: their sizes come from the model or
/// from request shapes, and must not turn into an allocation the machine cannot make.
let maxGeneratedElements = 1 << 28

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
        let result = try Tensor(zeros: value.dataType, shape: shape)
        let size = value.dataType.byteSize!
        value.withUnsafeBytes { source in
            for i in 0..<count { (result.unsafeBaseAddress + i * size).copyMemory(from: source.baseAddress!, byteCount: size) }
        }
        return [ValueMeta(constant: result)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}
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
        switch type {
        case .int64: return [ValueMeta(constant: try integers(scalars.map { $0.scalars(as: Int64.self)[0] }, type))]
        case .int32: return [ValueMeta(constant: try integers(scalars.map { Int64($0.scalars(as: Int32.self)[0]) }, type))]
        case .float32: return [ValueMeta(constant: try floats(scalars.map { Double($0.scalars(as: Float.self)[0]) }, type))]
        case .float64: return [ValueMeta(constant: try floats(scalars.map { $0.scalars(as: Double.self)[0] }, type))]
        default: throw .unsupported("Range of \(type) is not supported")
        }
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}

    private func count(_ span: Double, _ delta: Double) throws(InferenceError) -> Int {
        guard delta != 0 else { throw .invalidInput("Range's delta is 0") }
        let count = Swift.max(0, (span / delta).rounded(.up))
        guard count <= Double(maxGeneratedElements) else { throw InferenceError(.resourceExhausted, "Range of \(count) elements is too large") }
        return Int(count)
    }

    private func integers(_ values: [Int64], _ type: DataType) throws(InferenceError) -> Tensor {
        let (start, limit, delta) = (values[0], values[1], values[2])
        let n = try count(Double(limit) - Double(start), Double(delta))
        var result = try Tensor(zeros: type, shape: [n])
        result.withUnsafeMutableBytes { bytes in
            for i in 0..<n {
                let value = start &+ Int64(i) &* delta
                if type == .int64 { bytes.storeBytes(of: value, toByteOffset: i * 8, as: Int64.self) }
                else { bytes.storeBytes(of: Int32(truncatingIfNeeded: value), toByteOffset: i * 4, as: Int32.self) }
            }
        }
        return result
    }

    private func floats(_ values: [Double], _ type: DataType) throws(InferenceError) -> Tensor {
        let (start, limit, delta) = (values[0], values[1], values[2])
        let n = try count(limit - start, delta)
        var result = try Tensor(zeros: type, shape: [n])
        result.withUnsafeMutableBytes { bytes in
            for i in 0..<n {
                let value = start + Double(i) * delta
                if type == .float64 { bytes.storeBytes(of: value, toByteOffset: i * 8, as: Double.self) }
                else { bytes.storeBytes(of: Float(value), toByteOffset: i * 4, as: Float.self) }
            }
        }
        return result
    }
}

import MaaSCore

/// Reads a constant int64 (or int32) tensor as Ints.
func constantInts(_ meta: ValueMeta?, _ what: String) throws(InferenceError) -> [Int] {
    guard let meta else { throw .invalidModel("missing \(what)") }
    guard let tensor = meta.constant else {
        throw .unsupported("\(what) must be known when the plan is built (a constant or computed from shapes)")
    }
    switch tensor.dataType {
    case .int64: return tensor.scalars(as: Int64.self).map { Int($0) }
    case .int32: return tensor.scalars(as: Int32.self).map { Int($0) }
    default: throw .invalidModel("\(what) must be int64, got \(tensor.dataType)")
    }
}

struct ConstantKernel: Kernel {
    let value: Tensor

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(0...0)
        let attributes = context.node.attributes
        if let tensor = try context.tensor("value") {
            value = tensor
        } else if case .float(let f)? = attributes["value_float"] {
            value = try Tensor([f], shape: [])
        } else if case .floats(let fs)? = attributes["value_floats"] {
            value = try Tensor(fs, shape: [fs.count])
        } else if case .int(let i)? = attributes["value_int"] {
            value = try Tensor([Int64(i)], shape: [])
        } else if case .ints(let values)? = attributes["value_ints"] {
            value = try Tensor(values.map { Int64($0) }, shape: [values.count])
        } else {
            throw context.error("needs a value, value_float(s) or value_int(s) attribute (string and sparse constants are not supported)")
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        [ValueMeta(constant: value)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}
}

struct ReshapeKernel: Kernel {
    let allowZero: Bool
    let shapeAttribute: [Int]?

    init(_ context: NodeContext) throws(InferenceError) {
        if context.opset < 5 {
            try context.requireInputs(1...1)
            shapeAttribute = try context.ints("shape")
        } else {
            try context.requireInputs(2...2)
            shapeAttribute = nil
        }
        allowZero = try context.int("allowzero", 0) != 0
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        let requested: [Int]
        if let shapeAttribute { requested = shapeAttribute } else { requested = try constantInts(inputs[1], "the shape input") }
        var shape = requested
        var inferred: Int?
        for (index, dim) in requested.enumerated() {
            switch dim {
            case -1:
                guard inferred == nil else { throw .invalidInput("shape \(requested) has more than one -1") }
                inferred = index
            case 0 where !allowZero:
                guard index < data.shape.count else { throw .invalidInput("shape \(requested) copies dimension \(index) of \(data.shape), which has none") }
                shape[index] = data.shape[index]
            case ..<(-1):
                throw .invalidInput("shape \(requested) has dimension \(dim)")
            default:
                break
            }
        }
        let count = data.count
        if let inferred {
            let known = shape.enumerated().filter { $0.offset != inferred }.reduce(1) { $0 * $1.element }
            guard known > 0, count % known == 0 else {
                throw .invalidInput("cannot reshape \(data.shape) (\(count) elements) to \(requested)")
            }
            shape[inferred] = count / known
        }
        guard try Shape.elementCount(shape) == count else {
            throw .invalidInput("cannot reshape \(data.shape) (\(count) elements) to \(requested)")
        }
        return [ValueMeta(data.dataType, shape, constant: try data.constant?.reshaped(shape))]
    }

    var aliases: [Int: Int] { [0: 0] }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}
}

struct FlattenKernel: Kernel {
    let axis: Int

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        axis = try context.int("axis", 1)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        let rank = data.shape.count
        let axis = self.axis < 0 ? self.axis + rank : self.axis
        guard axis >= 0, axis <= rank else { throw .invalidInput("Flatten axis \(self.axis) is out of range for rank \(rank)") }
        let shape = [data.shape[..<axis].reduce(1, *), data.shape[axis...].reduce(1, *)]
        return [ValueMeta(data.dataType, shape, constant: try data.constant?.reshaped(shape))]
    }

    var aliases: [Int: Int] { [0: 0] }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}
}

/// Squeeze and Unsqueeze: axes from the attribute (opset < 13) or the second input.
struct SqueezeKernel: Kernel {
    let squeeze: Bool
    let axesAttribute: [Int]?
    let opset: Int

    init(_ context: NodeContext) throws(InferenceError) {
        squeeze = context.node.opType == "Squeeze"
        opset = context.opset
        if opset < 13 {
            try context.requireInputs(1...1)
            axesAttribute = try context.ints("axes")
            if !squeeze && axesAttribute == nil { throw context.error("needs the axes attribute") }
        } else {
            try context.requireInputs(squeeze ? 1...2 : 2...2)
            axesAttribute = nil
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        let axes: [Int]?
        if let axesAttribute {
            axes = axesAttribute
        } else if inputs.count > 1, inputs[1] != nil {
            axes = try constantInts(inputs[1], "the axes input")
        } else {
            axes = nil
        }
        var shape = data.shape
        if squeeze {
            if let axes {
                var normalized: [Int] = []
                for axis in axes { normalized.append(try normalizeAxis(axis, rank: shape.count, "Squeeze")) }
                for axis in normalized where shape[axis] != 1 {
                    throw .invalidInput("cannot squeeze dimension \(axis) of \(data.shape): it is not 1")
                }
                shape = shape.enumerated().filter { !normalized.contains($0.offset) }.map(\.element)
            } else {
                shape = shape.filter { $0 != 1 }
            }
        } else {
            let rank = shape.count + axes!.count
            var normalized: [Int] = []
            for axis in axes! { normalized.append(try normalizeAxis(axis, rank: rank, "Unsqueeze")) }
            guard Set(normalized).count == normalized.count else { throw .invalidInput("Unsqueeze axes \(axes!) repeat") }
            for axis in normalized.sorted() { shape.insert(1, at: axis) }
        }
        return [ValueMeta(data.dataType, shape, constant: try data.constant?.reshaped(shape))]
    }

    var aliases: [Int: Int] { [0: 0] }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}
}

struct TransposeKernel: Kernel {
    let perm: [Int]?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        perm = try context.ints("perm")
    }

    func permutation(rank: Int) throws(InferenceError) -> [Int] {
        let perm = self.perm ?? Array((0..<rank).reversed())
        guard perm.count == rank, Set(perm) == Set(0..<rank) else {
            throw .invalidInput("perm \(perm) is not a permutation of rank \(rank)")
        }
        return perm
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        let perm = try permutation(rank: data.shape.count)
        return [ValueMeta(data.dataType, perm.map { data.shape[$0] })]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!, y = outputs[0]
        guard y.count > 0 else { return }
        let perm = try permutation(rank: x.shape.count)
        let inStrides = Shape.strides(x.shape)
        let strides = perm.map { inStrides[$0] }
        let shape = y.shape, rank = shape.count
        guard rank > 0 else {
            y.base.copyMemory(from: x.base, byteCount: x.dataType.byteSize!)
            return
        }
        // Output rows (all dims but the last) in parallel; each reads its source at a fixed stride,
        // which is 1 (a block copy) when the last axis stays last, as in [0, 2, 1, 3].
        let inner = shape[rank - 1], innerStride = strides[rank - 1]
        let rows = y.count / inner
        switch x.dataType.byteSize! {
        case 8: Self.copy(x.pointer(UInt64.self), y.pointer(UInt64.self), shape, strides, rows, inner, innerStride, pool: pool)
        case 4: Self.copy(x.pointer(UInt32.self), y.pointer(UInt32.self), shape, strides, rows, inner, innerStride, pool: pool)
        case 2: Self.copy(x.pointer(UInt16.self), y.pointer(UInt16.self), shape, strides, rows, inner, innerStride, pool: pool)
        default: Self.copy(x.pointer(UInt8.self), y.pointer(UInt8.self), shape, strides, rows, inner, innerStride, pool: pool)
        }
    }

    private static func copy<T>(
        _ x: UnsafeMutablePointer<T>, _ y: UnsafeMutablePointer<T>, _ shape: [Int], _ strides: [Int],
        _ rows: Int, _ inner: Int, _ innerStride: Int, pool: ComputePool
    ) {
        let rank = shape.count
        forEachChunk(rows, pool: pool, grain: max(1, (1 << 15) / inner)) { range in
            for row in range {
                var source = 0, rest = row
                for dim in stride(from: rank - 2, through: 0, by: -1) {
                    source += (rest % shape[dim]) * strides[dim]
                    rest /= shape[dim]
                }
                let target = y + row * inner
                if innerStride == 1 {
                    target.update(from: x + source, count: inner)
                } else {
                    for j in 0..<inner { target[j] = x[source + j * innerStride] }
                }
            }
        }
    }
}

struct ConcatKernel: Kernel {
    let axis: Int

    init(_ context: NodeContext) throws(InferenceError) {
        guard !context.node.inputs.isEmpty else { throw context.error("needs at least one input") }
        axis = try context.int("axis", Int.min)
        if axis == Int.min { throw context.error("needs the axis attribute") }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        let metas = inputs.compactMap { $0 }
        guard let first = metas.first else { throw .invalidModel("missing input") }
        let axis = try normalizeAxis(self.axis, rank: first.shape.count, "Concat")
        var shape = first.shape
        shape[axis] = 0
        for meta in metas {
            guard meta.dataType == first.dataType, meta.shape.count == first.shape.count else {
                throw .invalidInput("inputs \(metas.map(\.shape)) of types \(metas.map(\.dataType)) cannot be concatenated")
            }
            for dim in 0..<shape.count where dim != axis && meta.shape[dim] != first.shape[dim] {
                throw .invalidInput("inputs \(metas.map(\.shape)) differ outside axis \(axis)")
            }
            shape[axis] += meta.shape[axis]
        }
        return [ValueMeta(first.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let y = outputs[0]
        let axis = try normalizeAxis(self.axis, rank: y.shape.count, "Concat")
        let size = y.dataType.byteSize!
        let outer = y.shape[..<axis].reduce(1, *)
        let inner = y.shape[(axis + 1)...].reduce(1, *)
        var offset = 0
        for input in inputs.compactMap({ $0 }) {
            let block = input.shape[axis] * inner * size
            for row in 0..<outer {
                (y.base + (row * y.shape[axis] * inner) * size + offset).copyMemory(from: input.base + row * block, byteCount: block)
            }
            offset += block
        }
    }
}

/// Shape: known when the plan is built, so everything computed from it folds there.
struct ShapeKernel: Kernel {
    let start: Int
    let end: Int?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        start = try context.int("start", 0)
        end = context.node.attributes["end"] == nil ? nil : try context.int("end", 0)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        let rank = data.shape.count
        func clamp(_ value: Int) -> Int { min(max(value < 0 ? value + rank : value, 0), rank) }
        let lower = clamp(start), upper = clamp(end ?? rank)
        let dims = lower < upper ? Array(data.shape[lower..<upper]) : []
        return [ValueMeta(constant: try Tensor(dims.map { Int64($0) }, shape: [dims.count]))]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {}
}

struct GatherKernel: Kernel {
    let axis: Int

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        axis = try context.int("axis", 0)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0], let indices = inputs[1] else { throw .invalidModel("missing input") }
        try checkIndexType(indices)
        let axis = try normalizeAxis(self.axis, rank: data.shape.count, "Gather")
        let shape = Array(data.shape[..<axis]) + indices.shape + Array(data.shape[(axis + 1)...])
        return [ValueMeta(data.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let data = inputs[0]!, indices = inputs[1]!, y = outputs[0]
        let axis = try normalizeAxis(self.axis, rank: data.shape.count, "Gather")
        let limit = data.shape[axis]
        let positions = try readIndices(indices, limit: limit, what: "Gather index")
        let size = data.dataType.byteSize!
        let outer = data.shape[..<axis].reduce(1, *)
        let inner = data.shape[(axis + 1)...].reduce(1, *) * size
        var target = y.base
        for row in 0..<outer {
            for position in positions {
                target.copyMemory(from: data.base + (row * limit + position) * inner, byteCount: inner)
                target += inner
            }
        }
    }
}

/// Gather-style indices are int64 or int32.
func checkIndexType(_ indices: ValueMeta) throws(InferenceError) {
    guard indices.dataType == .int64 || indices.dataType == .int32 else {
        throw .invalidInput("indices must be int64 or int32, got \(indices.dataType)")
    }
}

/// Validates every index (negative counts from the end) before anything is written.
func readIndices(_ indices: TensorView, limit: Int, what: String) throws(InferenceError) -> [Int] {
    var result: [Int] = []
    result.reserveCapacity(indices.count)
    for i in 0..<indices.count {
        let raw = indices.dataType == .int64 ? Int(indices.pointer(Int64.self)[i]) : Int(indices.pointer(Int32.self)[i])
        let index = raw < 0 ? raw + limit : raw
        guard index >= 0, index < limit else {
            throw .invalidInput("\(what) \(raw) is out of range for a dimension of size \(limit)")
        }
        result.append(index)
    }
    return result
}

/// ai.onnx.ml ArrayFeatureExtractor: picks entries of the last axis, as scikit-learn's
/// classifiers use it to map class indices to labels.
struct ArrayFeatureExtractorKernel: Kernel {
    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0], let indices = inputs[1] else { throw .invalidModel("missing input") }
        guard indices.dataType == .int64 || indices.dataType == .int32 else {
            throw .invalidInput("indices must be int64, got \(indices.dataType)")
        }
        guard !data.shape.isEmpty else { throw .invalidInput("input X must have rank >= 1") }
        let count = indices.count
        // onnxruntime's shapes: a 1-D X gives [1, count]; otherwise the last axis becomes count.
        let shape = data.shape.count == 1 ? [1, count] : Array(data.shape.dropLast()) + [count]
        return [ValueMeta(data.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let data = inputs[0]!, indices = inputs[1]!, y = outputs[0]
        let last = data.shape.last!
        let positions = try readIndices(indices, limit: last, what: "ArrayFeatureExtractor index")
        let size = data.dataType.byteSize!
        let rows = data.count / max(last, 1)
        var target = y.base
        for row in 0..<rows {
            for position in positions {
                target.copyMemory(from: data.base + (row * last + position) * size, byteCount: size)
                target += size
            }
        }
    }
}

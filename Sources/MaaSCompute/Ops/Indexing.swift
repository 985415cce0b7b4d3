import MaaSCore

/// The int64/int32 values of a view (a shape-like input, constant when the plan was built).
func viewInts(_ view: TensorView?) -> [Int]? {
    guard let view else { return nil }
    switch view.dataType {
    case .int64: return (0..<view.count).map { Int(view.pointer(Int64.self)[$0]) }
    case .int32: return (0..<view.count).map { Int(view.pointer(Int32.self)[$0]) }
    default: return nil
    }
}

/// Slice: starts, ends, axes and steps (inputs from opset 10, attributes before), known when the
/// plan is built; negative indices count from the end and out-of-range ones clamp, as in ONNX.
struct SliceKernel: Kernel {
    let attributes: (starts: [Int], ends: [Int], axes: [Int]?)?

    init(_ context: NodeContext) throws(InferenceError) {
        if context.opset < 10 {
            try context.requireInputs(1...1)
            guard let starts = try context.ints("starts"), let ends = try context.ints("ends") else {
                throw context.error("needs the starts and ends attributes")
            }
            attributes = (starts, ends, try context.ints("axes"))
        } else {
            try context.requireInputs(3...5)
            attributes = nil
        }
    }

    struct Plan {
        /// Per input dim: the first index taken and the step.
        var starts: [Int], steps: [Int], shape: [Int]
    }

    func plan(shape dataShape: [Int], starts: [Int], ends: [Int], axes given: [Int]?, steps: [Int]?) throws(InferenceError) -> Plan {
        let rank = dataShape.count
        let axes = given ?? Array(0..<starts.count)
        guard ends.count == starts.count, axes.count == starts.count, (steps?.count ?? starts.count) == starts.count else {
            throw .invalidInput("starts \(starts), ends \(ends), axes \(axes) and steps \(steps ?? []) differ in length")
        }
        var plan = Plan(starts: [Int](repeating: 0, count: rank), steps: [Int](repeating: 1, count: rank), shape: dataShape)
        var seen = Set<Int>()
        for (index, rawAxis) in axes.enumerated() {
            let axis = try normalizeAxis(rawAxis, rank: rank, "Slice")
            guard seen.insert(axis).inserted else { throw .invalidInput("Slice axes \(axes) repeat") }
            let size = dataShape[axis], step = steps?[index] ?? 1
            guard step != 0 else { throw .invalidInput("Slice step is 0 on axis \(rawAxis)") }
            // Exporters write INT64_MAX / INT64_MIN for "to the end": clamp before any arithmetic.
            func position(_ value: Int) -> Int {
                let clamped = min(max(value, -size - 1), size + 1)
                return clamped < 0 ? clamped + size : clamped
            }
            var start = position(starts[index]), end = position(ends[index])
            if step > 0 {
                start = min(max(start, 0), size)
                end = min(max(end, 0), size)
                // Counted without adding step, which may be Int64.max.
                plan.shape[axis] = end > start ? (end - start - 1) / step + 1 : 0
            } else {
                start = min(max(start, -1), size - 1)
                end = min(max(end, -1), size - 1)
                plan.shape[axis] = start > end ? (start - end - 1) / -(max(step, -Int.max)) + 1 : 0
            }
            plan.starts[axis] = start
            plan.steps[axis] = step
        }
        return plan
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        let plan: Plan
        if let attributes {
            plan = try self.plan(shape: data.shape, starts: attributes.starts, ends: attributes.ends, axes: attributes.axes, steps: nil)
        } else {
            func optional(_ index: Int, _ what: String) throws(InferenceError) -> [Int]? {
                index < inputs.count && inputs[index] != nil ? try constantInts(inputs[index], what) : nil
            }
            plan = try self.plan(
                shape: data.shape, starts: try constantInts(inputs[1], "the starts input"), ends: try constantInts(inputs[2], "the ends input"),
                axes: try optional(3, "the axes input"), steps: try optional(4, "the steps input"))
        }
        return [ValueMeta(data.dataType, plan.shape, constant: try data.constant.map { constant throws(InferenceError) in try sliced(constant, plan) })]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!
        let plan: Plan
        if let attributes {
            plan = try self.plan(shape: x.shape, starts: attributes.starts, ends: attributes.ends, axes: attributes.axes, steps: nil)
        } else {
            plan = try self.plan(
                shape: x.shape, starts: viewInts(inputs[1]) ?? [], ends: viewInts(inputs[2]) ?? [],
                axes: inputs.count > 3 ? viewInts(inputs[3]) : nil, steps: inputs.count > 4 ? viewInts(inputs[4]) : nil)
        }
        copy(x, into: outputs[0], plan, pool: pool)
    }

    private func sliced(_ tensor: Tensor, _ plan: Plan) throws(InferenceError) -> Tensor {
        let result = try Tensor(zeros: tensor.dataType, shape: plan.shape)
        copy(TensorView(base: tensor.unsafeBaseAddress, shape: tensor.shape, dataType: tensor.dataType),
             into: TensorView(base: result.unsafeBaseAddress, shape: result.shape, dataType: result.dataType), plan, pool: nil)
        return result
    }

    private func copy(_ x: TensorView, into y: TensorView, _ plan: Plan, pool: ComputePool?) {
        guard y.count > 0 else { return }
        let size = y.dataType.byteSize!
        let strides = Shape.strides(x.shape)
        let shape = y.shape, rank = shape.count
        let inner = shape.last ?? 1
        let innerStep = rank > 0 ? plan.steps[rank - 1] * strides[rank - 1] : 0
        let base = zip(plan.starts, strides).reduce(0) { $0 + $1.0 * $1.1 }
        let body: (Range<Int>) -> Void = { rows in
            for row in rows {
                var offset = base, rest = row
                for dim in stride(from: rank - 2, through: 0, by: -1) {
                    offset += (rest % shape[dim]) * plan.steps[dim] * strides[dim]
                    rest /= shape[dim]
                }
                let target = y.base + row * inner * size
                if innerStep == 1 {
                    target.copyMemory(from: x.base + offset * size, byteCount: inner * size)
                } else {
                    for j in 0..<inner { (target + j * size).copyMemory(from: x.base + (offset + j * innerStep) * size, byteCount: size) }
                }
            }
        }
        let rows = y.count / inner
        if let pool { forEachChunk(rows, pool: pool, grain: max(1, (1 << 15) / inner), body) } else { body(0..<rows) }
    }
}

/// Split along an axis into the given sizes (attribute before opset 13, input from 13), or into
/// equal parts (the last smaller, as `num_outputs` from opset 18 asks).
struct SplitKernel: Kernel {
    let axis: Int
    let outputCount: Int
    let splitAttribute: [Int]?

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(context.opset < 13 ? 1...1 : 1...2)
        axis = try context.int("axis", 0)
        outputCount = context.node.outputs.count
        splitAttribute = context.opset < 13 ? try context.ints("split") : nil
        if context.opset >= 18, let parts = context.node.attributes["num_outputs"], case .int(let count) = parts, count != outputCount {
            throw context.error("num_outputs \(count) but \(outputCount) outputs")
        }
    }

    func sizes(_ dim: Int, given: [Int]?) throws(InferenceError) -> [Int] {
        if let given {
            // The sizes come from the file: summed without trusting them not to overflow (found by
            // the onnx fuzz harness: sizes near Int.max trapped here).
            var total: Int? = 0
            for size in given {
                let (sum, overflow) = total?.addingReportingOverflow(size) ?? (0, true)
                total = overflow ? nil : sum
            }
            guard given.count == outputCount, given.allSatisfy({ $0 >= 0 }), total == dim else {
                throw .invalidInput("split sizes \(given) do not divide a dimension of \(dim) into \(outputCount) outputs")
            }
            return given
        }
        let part = (dim + outputCount - 1) / outputCount
        return (0..<outputCount).map { max(0, min(part, dim - $0 * part)) }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        let axis = try normalizeAxis(self.axis, rank: data.shape.count, "Split")
        let given = inputs.count > 1 && inputs[1] != nil ? try constantInts(inputs[1], "the split input") : splitAttribute
        return try sizes(data.shape[axis], given: given).map { size in
            var shape = data.shape
            shape[axis] = size
            return ValueMeta(data.dataType, shape)
        }
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!
        let axis = try normalizeAxis(self.axis, rank: x.shape.count, "Split")
        let size = x.dataType.byteSize!
        let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *) * size
        var offset = 0
        for y in outputs {
            let block = y.shape[axis] * inner
            for row in 0..<outer {
                (y.base + row * block).copyMemory(from: x.base + row * x.shape[axis] * inner + offset, byteCount: block)
            }
            offset += block
        }
    }
}

/// Expand: broadcasts the input to a shape known when the plan is built.
struct ExpandKernel: Kernel {
    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0] else { throw .invalidModel("missing input") }
        guard data.dataType.byteSize != nil else { throw .unsupported("Expand of \(data.dataType) is not supported") }
        let requested = try constantInts(inputs[1], "the shape input")
        guard let shape = Shape.broadcast(data.shape, requested) else {
            throw .invalidInput("cannot expand \(data.shape) to \(requested)")
        }
        _ = try Shape.elementCount(shape)
        return [ValueMeta(data.dataType, shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        broadcastCopy(inputs[0]!, into: outputs[0], pool: pool)
    }
}

/// GatherND with batch_dims: each index tuple in the last axis of `indices` picks a slice.
struct GatherNDKernel: Kernel {
    let batchDims: Int

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        batchDims = try context.int("batch_dims", 0)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0], let indices = inputs[1] else { throw .invalidModel("missing input") }
        guard indices.dataType == .int64 else { throw .invalidInput("indices must be int64, got \(indices.dataType)") }
        guard data.dataType.byteSize != nil else { throw .unsupported("GatherND of \(data.dataType) is not supported") }
        let b = batchDims
        guard let depth = indices.shape.last, b >= 0, b < indices.shape.count, b < data.shape.count,
            depth >= 1, depth <= data.shape.count - b, Array(data.shape[..<b]) == Array(indices.shape[..<b])
        else {
            throw .invalidInput("indices \(indices.shape) with batch_dims \(b) do not index data \(data.shape)")
        }
        return [ValueMeta(data.dataType, Array(indices.shape.dropLast()) + Array(data.shape[(b + depth)...]))]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let data = inputs[0]!, indices = inputs[1]!, y = outputs[0]
        let b = batchDims, depth = indices.shape.last!
        let size = data.dataType.byteSize!
        let batches = data.shape[..<b].reduce(1, *)
        let strides = Shape.strides(data.shape)
        let slice = data.shape[(b + depth)...].reduce(1, *) * size
        let batchStride = b > 0 ? strides[b - 1] : data.count
        let tuples = indices.count / depth
        let perBatch = tuples / max(batches, 1)
        let p = indices.pointer(Int64.self)
        // Every index is checked before anything is written.
        var offsets: [Int] = []
        offsets.reserveCapacity(tuples)
        for tuple in 0..<tuples {
            var offset = (tuple / max(perBatch, 1)) * batchStride
            for k in 0..<depth {
                let limit = data.shape[b + k]
                let raw = Int(p[tuple * depth + k])
                let index = raw < 0 ? raw + limit : raw
                guard index >= 0, index < limit else {
                    throw .invalidInput("GatherND index \(raw) is out of range for a dimension of size \(limit)")
                }
                offset += index * strides[b + k]
            }
            offsets.append(offset)
        }
        for (tuple, offset) in offsets.enumerated() {
            (y.base + tuple * slice).copyMemory(from: data.base + offset * size, byteCount: slice)
        }
    }
}

/// GatherElements: out[i][j]... = data[..., index at `axis`, ...], indices shaped like the output.
struct GatherElementsKernel: Kernel {
    let axis: Int

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...2)
        axis = try context.int("axis", 0)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let data = inputs[0], let indices = inputs[1] else { throw .invalidModel("missing input") }
        try checkIndexType(indices)
        let axis = try normalizeAxis(self.axis, rank: data.shape.count, "GatherElements")
        guard indices.shape.count == data.shape.count,
            zip(indices.shape, data.shape).enumerated().allSatisfy({ $0.offset == axis || $0.element.0 <= $0.element.1 })
        else {
            throw .invalidInput("indices \(indices.shape) do not fit data \(data.shape) on axis \(axis)")
        }
        return [ValueMeta(data.dataType, indices.shape)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let data = inputs[0]!, indices = inputs[1]!, y = outputs[0]
        let axis = try normalizeAxis(self.axis, rank: data.shape.count, "GatherElements")
        let positions = try readIndices(indices, limit: data.shape[axis], what: "GatherElements index")
        let size = data.dataType.byteSize!
        let dataStrides = Shape.strides(data.shape), shape = indices.shape
        var index = [Int](repeating: 0, count: shape.count)
        for flat in 0..<y.count {
            var source = 0
            for dim in 0..<shape.count { source += (dim == axis ? positions[flat] : index[dim]) * dataStrides[dim] }
            (y.base + flat * size).copyMemory(from: data.base + source * size, byteCount: size)
            var dim = shape.count - 1
            while dim >= 0 {
                index[dim] += 1
                if index[dim] < shape[dim] { break }
                index[dim] = 0
                dim -= 1
            }
        }
    }
}

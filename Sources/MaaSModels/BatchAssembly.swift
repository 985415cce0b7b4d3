import MaaSCore

/// Joining requests' inputs into one batch and splitting its outputs back, with padding along
/// axis 1 (the sequence axis) for requests of different lengths.
enum BatchAssembly {
    /// The parts stacked along axis 0. With `length`, each part's axis 1 is padded with `pad` to
    /// `length` (the parts agree on every other dimension; the batcher grouped them so).
    static func join(_ parts: [Tensor], length: Int?, pad: Double) throws(InferenceError) -> Tensor {
        let first = parts[0]
        let rows = parts.reduce(0) { $0 + ($1.shape.first ?? 1) }
        var shape = [rows] + first.shape.dropFirst()
        if let length, shape.count >= 2 { shape[1] = length } else if parts.count == 1 { return first }
        var joined = try Tensor(zeros: first.dataType, shape: shape)
        if length != nil, pad != 0 { joined.fill(with: pad) }
        let elementSize = first.dataType.byteSize ?? 1
        // Bytes per position along axis 1 in the joined tensor, and per row.
        let inner = shape.count >= 2 ? shape.dropFirst(2).reduce(elementSize, *) : elementSize
        let rowBytes = shape.count >= 2 ? shape[1] * inner : elementSize
        joined.withUnsafeMutableBytes { target in
            var row = 0
            for part in parts {
                part.withUnsafeBytes { source in
                    let partRows = part.shape.first ?? 1
                    guard partRows > 0, source.count > 0 else { return }
                    let partRowBytes = source.count / partRows
                    if partRowBytes == rowBytes {
                        (target.baseAddress! + row * rowBytes).copyMemory(from: source.baseAddress!, byteCount: source.count)
                    } else {
                        for r in 0..<partRows {
                            (target.baseAddress! + (row + r) * rowBytes).copyMemory(
                                from: source.baseAddress! + r * partRowBytes, byteCount: partRowBytes)
                        }
                    }
                    row += partRows
                }
            }
        }
        return joined
    }

    /// `tensor` split along axis 0 into parts of `rows` rows; with `lengths`, part i keeps the
    /// first `lengths[i]` positions of axis 1.
    static func split(_ tensor: Tensor, name: String, rows: [Int], lengths: [Int]?) throws(InferenceError) -> [Tensor] {
        let total = rows.reduce(0, +)
        guard tensor.shape.first == total else {
            throw InferenceError(.internal, "output '\(name)' has shape \(tensor.shape), which does not split into \(total) batch rows")
        }
        if lengths != nil, tensor.shape.count < 2 {
            throw InferenceError(.internal, "output '\(name)' has shape \(tensor.shape): no sequence axis to trim")
        }
        let rowBytes = tensor.byteCount / max(total, 1)
        let positionBytes = lengths == nil ? 0 : rowBytes / max(tensor.shape[1], 1)
        var parts: [Tensor] = []
        parts.reserveCapacity(rows.count)
        var row = 0
        for (index, count) in rows.enumerated() {
            var shape = [count] + tensor.shape.dropFirst()
            if let lengths { shape[1] = min(lengths[index], tensor.shape[1]) }
            var part = try Tensor(zeros: tensor.dataType, shape: shape)
            let partRowBytes = lengths == nil ? rowBytes : shape[1] * positionBytes
            tensor.withUnsafeBytes { source in
                part.withUnsafeMutableBytes { target in
                    guard target.count > 0 else { return }
                    for r in 0..<count {
                        (target.baseAddress! + r * partRowBytes).copyMemory(
                            from: source.baseAddress! + (row + r) * rowBytes, byteCount: partRowBytes)
                    }
                }
            }
            row += count
            parts.append(part)
        }
        return parts
    }
}

extension Tensor {
    /// Sets every element to `value` (exactly representable in the type: config checked it).
    mutating func fill(with value: Double) {
        func set<T>(_: T.Type, _ element: T) {
            withUnsafeMutableBytes { $0.bindMemory(to: T.self).update(repeating: element) }
        }
        switch dataType {
        case .float32: set(Float.self, Float(value))
        case .float64: set(Double.self, value)
        case .int64: set(Int64.self, Int64(value))
        case .int32: set(Int32.self, Int32(value))
        case .int16: set(Int16.self, Int16(value))
        case .int8: set(Int8.self, Int8(value))
        case .uint64: set(UInt64.self, UInt64(value))
        case .uint32: set(UInt32.self, UInt32(value))
        case .uint16: set(UInt16.self, UInt16(value))
        case .uint8, .bool: set(UInt8.self, UInt8(value))
        case .float16, .bfloat16, .string: break
        }
    }
}

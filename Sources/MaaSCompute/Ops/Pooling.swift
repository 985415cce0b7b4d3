import Glibc
import MaaSCore

/// MaxPool and AveragePool (count_include_pad), 1-D and 2-D.
struct PoolKernel: Kernel {
    let window: Window
    let isMax: Bool
    let countIncludePad: Bool

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
        isMax = context.node.opType == "MaxPool"
        if isMax, context.node.outputs.count > 1, !context.node.outputs[1].isEmpty {
            throw context.error("the Indices output of MaxPool is not supported")
        }
        if try context.int("storage_order", 0) != 0 { throw context.error("storage_order=1 is not supported") }
        window = try Window(context, kernel: nil, allowDilations: isMax || context.opset >= 19)
        countIncludePad = try context.int("count_include_pad", 0) != 0
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0], x.dataType == .float32 else { throw .unsupported("expects a float32 input") }
        guard x.shape.count == window.kernel.count + 2 else {
            throw .invalidInput("input \(x.shape) must have rank \(window.kernel.count + 2)")
        }
        let (output, _, _) = try window.resolve(Array(x.shape.dropFirst(2)))
        return [ValueMeta(.float32, Array(x.shape.prefix(2)) + output)]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!, y = outputs[0]
        let (_, begin, end) = try window.resolve(Array(x.shape.dropFirst(2)))
        let inSize = twoD(Array(x.shape.dropFirst(2)), 1), outSize = twoD(Array(y.shape.dropFirst(2)), 1)
        let kernel = twoD(window.kernel, 1), stride = twoD(window.strides, 1), dilation = twoD(window.dilations, 1)
        let padBegin = twoD(begin, 0), padEnd = twoD(end, 0)
        let planes = x.shape[0] * x.shape[1]
        let px = x.floats, py = y.floats
        let (isMax, includePad) = (isMax, countIncludePad)
        // Plain locals: array subscripts in the inner loops would be bounds-checked each time.
        let (inH, inW, outH, outW) = (inSize[0], inSize[1], outSize[0], outSize[1])
        let (kH, kW, sH, sW, dH, dW) = (kernel[0], kernel[1], stride[0], stride[1], dilation[0], dilation[1])
        let (pH, pW, peH, peW) = (padBegin[0], padBegin[1], padEnd[0], padEnd[1])
        if isMax && kH == 2 && kW == 2 && sH == 2 && sW == 2 && dH == 1 && dW == 1 && pH == 0 && pW == 0
            && outH * 2 <= inH && outW * 2 <= inW
        {
            // The common 2x2/2 max pool: no window leaves the input, so no bounds checks.
            forEachChunk(planes, pool: pool, grain: max(1, 16384 / max(outH * outW * 4, 1))) { range in
                for plane in range {
                    let input = px + plane * inH * inW
                    let output = py + plane * outH * outW
                    for oh in 0..<outH {
                        let top = input + 2 * oh * inW, bottom = top + inW
                        let line = output + oh * outW
                        for ow in 0..<outW {
                            line[ow] = max(max(top[2 * ow], top[2 * ow + 1]), max(bottom[2 * ow], bottom[2 * ow + 1]))
                        }
                    }
                }
            }
            return
        }
        forEachChunk(planes, pool: pool, grain: max(1, 16384 / max(outH * outW * kH * kW, 1))) { range in
            for plane in range {
                let input = px + plane * inH * inW
                let output = py + plane * outH * outW
                for oh in 0..<outH {
                    let hStart = oh * sH - pH
                    // Kernel rows that land inside the input.
                    let khFirst = hStart >= 0 ? 0 : (-hStart + dH - 1) / dH
                    let khLast = min(kH, (inH - hStart + dH - 1) / dH)
                    for ow in 0..<outW {
                        let wStart = ow * sW - pW
                        let kwFirst = wStart >= 0 ? 0 : (-wStart + dW - 1) / dW
                        let kwLast = min(kW, (inW - wStart + dW - 1) / dW)
                        if isMax {
                            var best = -Float.infinity
                            var kh = khFirst
                            while kh < khLast {
                                let line = input + (hStart + kh * dH) * inW + wStart
                                var kw = kwFirst
                                while kw < kwLast {
                                    best = max(best, line[kw * dW])
                                    kw += 1
                                }
                                kh += 1
                            }
                            output[oh * outW + ow] = best
                        } else {
                            var sum: Float = 0
                            var kh = khFirst
                            while kh < khLast {
                                let line = input + (hStart + kh * dH) * inW + wStart
                                var kw = kwFirst
                                while kw < kwLast {
                                    sum += line[kw * dW]
                                    kw += 1
                                }
                                kh += 1
                            }
                            let valid = max(0, khLast - khFirst) * max(0, kwLast - kwFirst)
                            // count_include_pad counts the window clipped to the padded input.
                            let hEnd = min(hStart + (kH - 1) * dH + 1, inH + peH)
                            let wEnd = min(wStart + (kW - 1) * dW + 1, inW + peW)
                            let total = ((hEnd - hStart + dH - 1) / dH) * ((wEnd - wStart + dW - 1) / dW)
                            let divisor = includePad ? total : valid
                            output[oh * outW + ow] = divisor > 0 ? sum / Float(divisor) : 0
                        }
                    }
                }
            }
        }
    }
}

struct GlobalAveragePoolKernel: Kernel {
    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(1...1)
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0], x.dataType == .float32, x.shape.count >= 3 else {
            throw .unsupported("expects a float32 input of rank >= 3")
        }
        return [ValueMeta(.float32, Array(x.shape.prefix(2)) + [Int](repeating: 1, count: x.shape.count - 2))]
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) {
        let x = inputs[0]!, y = outputs[0]
        let spatial = x.shape.dropFirst(2).reduce(1, *)
        let px = x.floats, py = y.floats
        for plane in 0..<y.count {
            var sum: Float = 0
            for i in 0..<spatial { sum += px[plane * spatial + i] }
            py[plane] = spatial > 0 ? sum / Float(spatial) : 0
        }
    }
}

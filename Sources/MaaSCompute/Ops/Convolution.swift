import Glibc
import MaaSCore

struct ConvKernel: ReluFusing {
    let window: Window
    let group: Int
    /// Constant weights packed for the direct kernel, when it applies (stride 1, no dilation,
    /// AVX2): on the MNIST CNN it replaced im2col + GEMM (scripts/bench-engine).
    let direct: DirectConvolution?
    /// Set per plan by timing (``Tunable``); nil takes direct where it applies, else im2col.
    var implementation: ConvImplementation?
    /// A following 2x2 stride-2 MaxPool computed in the same pass by the direct kernel (set by
    /// the graph compiler, see ``fusingMaxPool(_:)``): the unpooled output is never written.
    var pooled = false
    /// A following Relu computed in the same pass (set by the graph compiler).
    var relu = false
    /// im2col then OpenBLAS is always among the implementations timed at load.
    var callsOpenBLAS: Bool { true }

    init(_ context: NodeContext) throws(InferenceError) {
        try context.requireInputs(2...3)
        group = try context.int("group", 1)
        guard group >= 1 else { throw context.error("group \(group) must be >= 1") }
        var kernel = try context.ints("kernel_shape")
        if kernel == nil, let weight = context.constants[1], weight.rank >= 3 { kernel = Array(weight.shape.dropFirst(2)) }
        window = try Window(context, kernel: kernel)
        if let weight = context.constants[1] {
            direct = try DirectConvolution(weight: weight, group: group, window: window)
        } else {
            direct = nil
        }
    }

    func outputs(_ inputs: [ValueMeta?]) throws(InferenceError) -> [ValueMeta] {
        guard let x = inputs[0], let w = inputs[1] else { throw .invalidModel("missing input") }
        guard x.dataType == .float32, w.dataType == .float32 else { throw .unsupported("Conv on \(x.dataType) is not supported (float32 only)") }
        let rank = window.kernel.count
        guard x.shape.count == rank + 2, w.shape.count == rank + 2 else {
            throw .invalidInput("input \(x.shape) and weight \(w.shape) must have rank \(rank + 2) for a \(rank)-D Conv")
        }
        let (channels, filters) = (x.shape[1], w.shape[0])
        guard channels % group == 0, filters % group == 0, w.shape[1] == channels / group else {
            throw .invalidInput("weight \(w.shape) does not fit \(channels) input channels in \(group) groups")
        }
        guard Array(w.shape.dropFirst(2)) == window.kernel else {
            throw .invalidInput("weight \(w.shape) does not match kernel_shape \(window.kernel)")
        }
        if inputs.count > 2, let b = inputs[2], b.shape != [filters] {
            throw .invalidInput("bias \(b.shape) must be [\(filters)]")
        }
        let (output, _, _) = try window.resolve(Array(x.shape.dropFirst(2)))
        if pooled, output.contains(where: { $0 < 2 }) {
            // What the MaxPool would have said, so fusing changes no error.
            throw .invalidInput("MaxPool: window [2, 2] (dilations [1, 1]) is larger than the padded input \(output)")
        }
        return [ValueMeta(.float32, [x.shape[0], filters] + (pooled ? output.map { $0 / 2 } : output))]
    }

    /// This convolution with `next`, a MaxPool, folded into its output pass, when the direct
    /// kernel runs it (2-D, stride 1) and the pool is 2x2 with stride 2, no padding or dilation.
    func fusingMaxPool(_ next: any Kernel) -> ConvKernel? {
        guard let next = next as? PoolKernel, next.isMax, direct != nil, window.kernel.count == 2,
            next.window.kernel == [2, 2], next.window.strides == [2, 2], next.window.dilations == [1, 1],
            next.window.pads.allSatisfy({ $0 == 0 }), ["NOTSET", "VALID"].contains(next.window.autoPad), !next.window.ceilMode,
            ConvImplementation.forced(among: implementations(direct: true)) ?? .direct == .direct
        else { return nil }
        var fused = self
        fused.pooled = true
        return fused
    }

    func run(_ inputs: [TensorView?], _ outputs: [TensorView], pool: ComputePool) throws(InferenceError) {
        let x = inputs[0]!, w = inputs[1]!, y = outputs[0]
        let bias = inputs.count > 2 ? inputs[2] : nil
        let (_, padBegin, padEnd) = try window.resolve(Array(x.shape.dropFirst(2)))
        if let direct, pooled || (implementation ?? .direct) == .direct {
            direct.run(
                x: x, y: y, bias: bias.map { UnsafePointer($0.floats) }, padBegin: twoD(padBegin, 0), padEnd: twoD(padEnd, 0),
                relu: relu, pooled: pooled, pool: pool)
            return
        }
        let inSize = twoD(Array(x.shape.dropFirst(2)), 1), outSize = twoD(Array(y.shape.dropFirst(2)), 1)
        let kernel = twoD(window.kernel, 1), stride = twoD(window.strides, 1), dilation = twoD(window.dilations, 1)
        let pad = twoD(padBegin, 0)
        let (batch, channels, filters) = (x.shape[0], x.shape[1], y.shape[1])
        let groupChannels = channels / group, groupFilters = filters / group
        let columns = outSize[0] * outSize[1]
        let patch = groupChannels * kernel[0] * kernel[1]
        let geometry = Im2Col(
            channels: groupChannels, height: inSize[0], width: inSize[1], kernel: kernel, stride: stride,
            dilation: dilation, pad: pad, outHeight: outSize[0], outWidth: outSize[1])
        let px = x.floats, pw = w.floats, py = y.floats, pb = bias?.floats
        let (group, relu) = (self.group, self.relu)
        // One (image, group) pair per task when there are enough; otherwise the GEMM's columns
        // spread over the pool.
        let tasks = batch * group
        let usePanels = SmallGEMM.isAvailable && implementation != .im2colBLAS
        let perTask: (Int, Bool) -> Void = { task, nested in
            let (n, g) = (task / group, task % group)
            if usePanels {
                // im2col writes straight into the kernels' panel layout: no packing pass.
                let panelCount = (columns + 15) / 16
                let scratch = ComputePool.scratch(floats: panelCount * patch * 16 + patch * columns)
                let panels = scratch + patch * columns
                geometry.fillPanels(
                    panels, scratch: scratch, from: px + (n * channels + g * groupChannels) * inSize[0] * inSize[1],
                    pool: nested ? pool : nil)
                let out = py + (n * filters + g * groupFilters) * columns
                let weights = pw + g * groupFilters * patch
                let rowBias = pb.map { UnsafePointer($0 + g * groupFilters) }
                SmallGEMM.runRows(
                    m: groupFilters, k: patch, a: weights, panels: panels, panelCount: panelCount,
                    rowBias: rowBias, c: out, n: columns, relu: relu, pool: nested ? pool : nil)
                return
            }
            let col = ComputePool.scratch(floats: patch * columns)
            geometry.fill(col, from: px + (n * channels + g * groupChannels) * inSize[0] * inSize[1])
            let out = py + (n * filters + g * groupFilters) * columns
            if let pb {
                for f in 0..<groupFilters { (out + f * columns).update(repeating: pb[g * groupFilters + f], count: columns) }
            }
            var gemm = TiledGEMM(
                m: groupFilters, n: columns, k: patch, a: pw + g * groupFilters * patch, lda: patch,
                b: col, ldb: columns, c: out)
            gemm.accumulate = pb != nil
            gemm.relu = relu
            if nested { gemm.run(pool: pool) } else { gemm.runSingle() }
        }
        if tasks >= pool.threadCount {
            pool.parallelFor(tasks) { perTask($0, false) }
        } else {
            for task in 0..<tasks { perTask(task, true) }
        }
    }
}

/// How a convolution runs: the direct kernel, or im2col then our panel kernels or OpenBLAS.
enum ConvImplementation: String, Sendable {
    case direct
    case im2colPanels = "im2col"
    case im2colBLAS = "im2col-blas"

    /// The first of `MAAS_CONV`'s preferences among `available`, if it names one.
    static func forced(among available: [ConvImplementation]) -> ConvImplementation? {
        guard let value = getenv(ConvKernel.forcingVariable) else { return nil }
        return String(cString: value).split(separator: ",").compactMap { ConvImplementation(rawValue: String($0)) }
            .first(where: available.contains)
    }
}

extension ConvKernel: Tunable {
    static let forcingVariable = "MAAS_CONV"

    func implementations(_ inputs: [TensorView?], _ outputs: [TensorView]) -> [String] {
        // A fused MaxPool exists only in the direct kernel.
        (pooled ? [.direct] : implementations(direct: direct != nil)).map(\.rawValue)
    }

    func implementations(direct: Bool) -> [ConvImplementation] {
        var all: [ConvImplementation] = []
        if direct { all.append(.direct) }
        if SmallGEMM.isAvailable { all.append(.im2colPanels) }
        all.append(.im2colBLAS)
        return all
    }

    func using(_ implementation: String) -> any Kernel {
        var kernel = self
        kernel.implementation = ConvImplementation(rawValue: implementation)
        return kernel
    }
}

/// Unfolds image patches into columns so a convolution becomes one GEMM.
struct Im2Col: Sendable {
    let channels: Int, height: Int, width: Int
    let kernel: [Int], stride: [Int], dilation: [Int], pad: [Int]
    let outHeight: Int, outWidth: Int

    /// Row-major columns: [patch][outHeight * outWidth].
    func fill(_ col: UnsafeMutablePointer<Float>, from image: UnsafePointer<Float>, channelRange: Range<Int>? = nil) {
        let columns = outHeight * outWidth
        forEachPatchLine(image, channels: channelRange ?? 0..<channels) { row, oh, source, first, last in
            let line = col + row * columns + oh * outWidth
            write(line, source, first, last)
        }
    }

    /// Columns in the panel layout of the small-GEMM kernels, [columns / 16][patch][16], so the
    /// convolution's GEMM needs no packing pass. Lines are unfolded row-major into `scratch`
    /// (patch x columns floats; contiguous copies), then moved into panels panel by panel, so
    /// that the panel writes are sequential.
    func fillPanels(
        _ panels: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, from image: UnsafePointer<Float>,
        pool: ComputePool?
    ) {
        // Channels are independent: spread them over the pool when the caller has no other
        // parallelism (batch 1).
        let tasks = pool.map { min($0.threadCount, channels) } ?? 1
        if tasks > 1, let pool {
            let per = (channels + tasks - 1) / tasks
            pool.parallelFor(tasks) { task in
                let range = task * per..<min(channels, (task + 1) * per)
                if !range.isEmpty { fillPanels(panels, scratch: scratch, from: image, channels: range) }
            }
        } else {
            fillPanels(panels, scratch: scratch, from: image, channels: 0..<channels)
        }
    }

    private func fillPanels(
        _ panels: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, from image: UnsafePointer<Float>,
        channels range: Range<Int>
    ) {
        fill(scratch, from: image, channelRange: range)
        let perChannel = kernel[0] * kernel[1]
        let patch = channels * perChannel
        let columns = outHeight * outWidth
        let rows = range.lowerBound * perChannel..<range.upperBound * perChannel
        let panelCount = (columns + 15) / 16
        for panel in 0..<panelCount {
            let start = panel * 16
            let count = min(16, columns - start)
            var target = panels + (panel * patch + rows.lowerBound) * 16
            for row in rows {
                let source = scratch + row * columns + start
                for lane in 0..<count { target[lane] = source[lane] }
                for lane in count..<16 { target[lane] = 0 }
                target += 16
            }
        }
    }

    /// Calls `body(patchRow, oh, source, first, last)` for every output line: `source[ow * strideW]`
    /// is the input for output column ow when `first <= ow < last`, zero (padding) otherwise.
    @inline(__always)
    private func forEachPatchLine(
        _ image: UnsafePointer<Float>,
        channels range: Range<Int>,
        _ body: (Int, Int, UnsafePointer<Float>, Int, Int) -> Void
    ) {
        let (kernelH, kernelW) = (kernel[0], kernel[1])
        let (strideH, strideW) = (stride[0], stride[1])
        let (dilationH, dilationW) = (dilation[0], dilation[1])
        let (padH, padW) = (pad[0], pad[1])
        var row = range.lowerBound * kernelH * kernelW
        for c in range {
            let plane = image + c * height * width
            for kh in 0..<kernelH {
                for kw in 0..<kernelW {
                    let shift = kw * dilationW - padW
                    // Output columns whose input column ow * strideW + shift lies inside the row.
                    let first = shift >= 0 ? 0 : (-shift + strideW - 1) / strideW
                    let last = max(first, min(outWidth, (width - shift + strideW - 1) / strideW))
                    for oh in 0..<outHeight {
                        let ih = oh * strideH - padH + kh * dilationH
                        if ih < 0 || ih >= height {
                            body(row, oh, plane, 0, 0)
                        } else {
                            body(row, oh, plane + ih * width + shift, first, last)
                        }
                    }
                    row += 1
                }
            }
        }
    }

    @inline(__always)
    private func write(_ line: UnsafeMutablePointer<Float>, _ source: UnsafePointer<Float>, _ first: Int, _ last: Int) {
        if first > 0 { line.update(repeating: 0, count: first) }
        if stride[1] == 1 {
            if last > first { (line + first).update(from: source + first, count: last - first) }
        } else {
            let step = stride[1]
            for ow in first..<last { line[ow] = source[ow * step] }
        }
        if last < outWidth { (line + last).update(repeating: 0, count: outWidth - last) }
    }
}

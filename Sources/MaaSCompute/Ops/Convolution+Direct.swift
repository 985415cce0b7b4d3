import CMaaSKernels
import MaaSCore

/// A stride-1, undilated Conv computed in place from NCHW planes by the AVX2 direct kernel
/// (CMaaSKernels `conv_direct.c`): weights packed once at load in blocks of 6 filters, no im2col.
/// Measured with scripts/bench-engine on the MNIST CNN: see ``ConvKernel``.
struct DirectConvolution: Sendable {
    let group: Int
    let groupChannels: Int
    let groupFilters: Int
    let kernelHeight: Int
    let kernelWidth: Int
    /// [group][ceil(groupFilters / 6)][taps][6].
    let packed: Tensor

    static let block = Int(CMaaSKernels_CONV_BLOCK)

    var taps: Int { groupChannels * kernelHeight * kernelWidth }
    var blocks: Int { (groupFilters + Self.block - 1) / Self.block }

    /// Packs `weight` ([filters, channels / group, kh(, kw)]), or nil when this CPU lacks the
    /// kernel (no AVX2/FMA, or MAAS_NO_SMALL_GEMM) or the window is strided or dilated.
    init?(weight: Tensor, group: Int, window: Window) throws(InferenceError) {
        guard SmallGEMM.isAvailable, weight.dataType == .float32, weight.rank == window.kernel.count + 2,
            window.strides.allSatisfy({ $0 == 1 }), window.dilations.allSatisfy({ $0 == 1 }),
            weight.shape[0] % group == 0
        else { return nil }
        self.group = group
        groupFilters = weight.shape[0] / group
        groupChannels = weight.shape[1]
        kernelHeight = weight.rank == 4 ? weight.shape[2] : 1
        kernelWidth = weight.shape[weight.rank - 1]
        let taps = groupChannels * kernelHeight * kernelWidth
        let perGroup = CMaaSKernels_conv_packed_floats(Int32(groupFilters), Int32(taps))
        var packed = try Tensor(zeros: .float32, shape: [group * perGroup])
        let filters = groupFilters
        weight.withUnsafeBytes { source in
            let weights = source.bindMemory(to: Float.self).baseAddress!
            packed.withUnsafeMutableBytes { target in
                let out = target.bindMemory(to: Float.self).baseAddress!
                for g in 0..<group {
                    CMaaSKernels_conv_pack(weights + g * filters * taps, Int32(filters), Int32(taps), out + g * perGroup)
                }
            }
        }
        self.packed = packed
    }

    /// y = conv(x) + bias over the pool, or with `pooled` its 2x2 stride-2 maxima (a fused
    /// MaxPool; y is then the pooled tensor). `padBegin`/`padEnd` are [top, left] and [bottom, right].
    func run(
        x: TensorView, y: TensorView, bias: UnsafePointer<Float>?, padBegin: [Int], padEnd: [Int], relu: Bool,
        pooled: Bool = false, pool: ComputePool
    ) {
        let inH = x.shape.count == 4 ? x.shape[2] : 1, inW = x.shape[x.shape.count - 1]
        // Rows and columns of y: conv outputs, or pooled ones.
        let outH = y.shape.count == 4 ? y.shape[2] : 1, outW = y.shape[y.shape.count - 1]
        let paddedH = inH + padBegin[0] + padEnd[0], paddedW = inW + padBegin[1] + padEnd[1]
        let padded = paddedH != inH || paddedW != inW
        let (batch, channels, filters) = (x.shape[0], x.shape[1], y.shape[1])
        let images = batch * group
        let unitsPerImage = blocks * outH
        let threads = min(pool.threadCount, images * unitsPerImage)
        let px = UnsafePointer(x.floats), py = y.floats
        let weights = UnsafePointer(packed.unsafeBaseAddress.assumingMemoryBound(to: Float.self))
        let perGroup = blocks * taps * Self.block

        /// Input planes of image-group `image`, zero-padded into this thread's scratch if needed.
        func source(_ image: Int) -> UnsafePointer<Float> {
            let (n, g) = (image / group, image % group)
            let planes = px + (n * channels + g * groupChannels) * inH * inW
            guard padded else { return planes }
            let scratch = ComputePool.scratch(floats: groupChannels * paddedH * paddedW)
            scratch.update(repeating: 0, count: groupChannels * paddedH * paddedW)
            for c in 0..<groupChannels {
                for row in 0..<inH {
                    (scratch + (c * paddedH + row + padBegin[0]) * paddedW + padBegin[1])
                        .update(from: planes + (c * inH + row) * inW, count: inW)
                }
            }
            return UnsafePointer(scratch)
        }

        /// Units `range` (block-major, then output rows) of image-group `image`.
        func compute(_ image: Int, _ units: Range<Int>, from input: UnsafePointer<Float>) {
            let (n, g) = (image / group, image % group)
            var unit = units.lowerBound
            while unit < units.upperBound {
                let block = unit / outH, firstRow = unit % outH
                let lastRow = min(outH, firstRow + units.upperBound - unit)
                let filter = block * Self.block
                CMaaSKernels_conv_direct(
                    input, Int32(groupChannels), Int32(paddedH), Int32(paddedW),
                    weights + g * perGroup + block * taps * Self.block, Int32(kernelHeight), Int32(kernelWidth),
                    bias.map { $0 + g * groupFilters + filter }, Int32(min(Self.block, groupFilters - filter)),
                    py + ((n * filters + g * groupFilters + filter) * outH * outW), Int32(outH), Int32(outW),
                    Int32(firstRow), Int32(lastRow), relu ? 1 : 0, pooled ? 1 : 0)
                unit += lastRow - firstRow
            }
        }

        if images >= threads {
            // Whole image-groups per task: each thread pads (if needed) only what it computes.
            pool.parallelFor(images) { image in compute(image, 0..<unitsPerImage, from: source(image)) }
            return
        }
        // Fewer images than threads (batch 1): one contiguous share of every image's units per
        // thread, a single hand-off.
        pool.parallelFor(threads) { thread in
            for image in 0..<images {
                let share = split(unitsPerImage, part: thread, of: threads)
                if !share.isEmpty { compute(image, share, from: source(image)) }
            }
        }
    }

    private func split(_ count: Int, part: Int, of parts: Int) -> Range<Int> {
        (count * part / parts)..<(count * (part + 1) / parts)
    }
}

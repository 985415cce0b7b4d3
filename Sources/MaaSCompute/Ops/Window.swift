import MaaSCore

/// Spatial attributes shared by Conv and the pools, for 1-D and 2-D inputs ([N, C, W] or
/// [N, C, H, W]; 1-D is handled as H = 1).
struct Window {
    var kernel: [Int]
    var strides: [Int]
    var dilations: [Int]
    var pads: [Int]  // begin..., end...
    var autoPad: String
    var ceilMode: Bool

    init(_ context: NodeContext, kernel given: [Int]?, allowDilations: Bool = true) throws(InferenceError) {
        let kernel: [Int]
        if let given { kernel = given } else { kernel = try context.ints("kernel_shape") ?? [] }
        guard !kernel.isEmpty, kernel.count <= 2, kernel.allSatisfy({ $0 > 0 }) else {
            throw context.error("kernel_shape \(kernel) is not supported (1-D or 2-D windows with positive sizes)")
        }
        self.kernel = kernel
        let rank = kernel.count
        strides = try context.ints("strides") ?? [Int](repeating: 1, count: rank)
        dilations = try context.ints("dilations") ?? [Int](repeating: 1, count: rank)
        pads = try context.ints("pads") ?? [Int](repeating: 0, count: 2 * rank)
        autoPad = try context.string("auto_pad", "NOTSET")
        ceilMode = try context.int("ceil_mode", 0) != 0
        guard strides.count == rank, strides.allSatisfy({ $0 > 0 }) else { throw context.error("strides \(strides) do not fit kernel \(kernel)") }
        guard dilations.count == rank, dilations.allSatisfy({ $0 > 0 }) else { throw context.error("dilations \(dilations) do not fit kernel \(kernel)") }
        guard pads.count == 2 * rank, pads.allSatisfy({ $0 >= 0 }) else { throw context.error("pads \(pads) do not fit kernel \(kernel)") }
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else { throw context.error("auto_pad '\(autoPad)' is not supported") }
        if !allowDilations && dilations.contains(where: { $0 != 1 }) { throw context.error("dilations are not supported here") }
    }

    /// Output spatial sizes and the pads actually used, for input spatial sizes `input`.
    func resolve(_ input: [Int]) throws(InferenceError) -> (output: [Int], padBegin: [Int], padEnd: [Int]) {
        let rank = kernel.count
        guard input.count == rank else {
            throw .invalidInput("input has \(input.count) spatial dims, the \(rank)-D window needs \(rank)")
        }
        var output: [Int] = [], begin: [Int] = [], end: [Int] = []
        for d in 0..<rank {
            let effective = (kernel[d] - 1) * dilations[d] + 1
            var pb = pads[d], pe = pads[d + rank]
            switch autoPad {
            case "VALID":
                pb = 0
                pe = 0
            case "SAME_UPPER", "SAME_LOWER":
                let out = (input[d] + strides[d] - 1) / strides[d]
                let total = max(0, (out - 1) * strides[d] + effective - input[d])
                pb = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2
                pe = total - pb
            default:
                break
            }
            let span = input[d] + pb + pe - effective
            guard span >= 0 else {
                throw .invalidInput("window \(kernel) (dilations \(dilations)) is larger than the padded input \(input)")
            }
            var out = (ceilMode ? (span + strides[d] - 1) / strides[d] : span / strides[d]) + 1
            // A last window that would start in the end padding is dropped (as onnxruntime does).
            if ceilMode && (out - 1) * strides[d] >= input[d] + pb { out -= 1 }
            output.append(out)
            begin.append(pb)
            end.append(pe)
        }
        return (output, begin, end)
    }
}

/// Lifts 1-D geometry to 2-D with H = 1.
func twoD(_ values: [Int], _ fill: Int) -> [Int] { values.count == 1 ? [fill] + values : values }

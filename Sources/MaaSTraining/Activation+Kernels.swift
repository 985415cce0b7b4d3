import Glibc

extension Activation {
    /// output[i] = f(input[i]) over `count` elements (output may alias input).
    func apply(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .none:
            if UnsafePointer(output) != input { output.update(from: input, count: count) }
        case .relu:
            for i in 0..<count { output[i] = max(input[i], 0) }
        case .tanh:
            for i in 0..<count { output[i] = tanhf(input[i]) }
        case .sigmoid:
            for i in 0..<count { output[i] = 1 / (1 + expf(-input[i])) }
        case .gelu:
            // PyTorch's default (exact) GELU: x·Φ(x).
            for i in 0..<count {
                let x = input[i]
                output[i] = 0.5 * x * (1 + erff(x * Float(0.5).squareRoot()))
            }
        }
    }

    /// delta[i] *= f′(x[i]), given the layer's input `z` and output `a = f(z)`.
    func backward(delta: UnsafeMutablePointer<Float>, z: UnsafePointer<Float>, a: UnsafePointer<Float>, count: Int) {
        switch self {
        case .none:
            break
        case .relu:
            for i in 0..<count { delta[i] = a[i] > 0 ? delta[i] : 0 }
        case .tanh:
            for i in 0..<count { delta[i] *= 1 - a[i] * a[i] }
        case .sigmoid:
            // PyTorch's sigmoid_backward order: (δ · (1 − a)) · a.
            for i in 0..<count { delta[i] = delta[i] * (1 - a[i]) * a[i] }
        case .gelu:
            // d/dx x·Φ(x) = Φ(x) + x·φ(x).
            let inverseRoot2Pi = 1 / Float(2 * Float.pi).squareRoot()
            for i in 0..<count {
                let x = z[i]
                let cdf = 0.5 * (1 + erff(x * Float(0.5).squareRoot()))
                let pdf = inverseRoot2Pi * expf(-0.5 * x * x)
                delta[i] *= cdf + x * pdf
            }
        }
    }
}

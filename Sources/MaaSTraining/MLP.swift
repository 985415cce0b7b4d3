import MaaSCore

/// A multilayer perceptron: Linear layers with one activation between them (none after the
/// last), the shape `nn.Sequential(Linear, act, Linear, ...)` has in PyTorch.
///
/// All parameters live in one flat array, layer by layer: the weight `[out, in]` row-major
/// (PyTorch's layout), then the bias `[out]`. The optimizer and the gradient reduction then run
/// over one contiguous vector.
public struct MLP: Sendable, Equatable {
    public let layerSizes: [Int]
    public let activation: Activation
    public var parameters: [Float]
    /// Where layer `l`'s weight starts in ``parameters``; its bias follows the weight.
    public let weightOffsets: [Int]

    /// An MLP with the given parameters. Throws if the sizes are not at least two positive
    /// widths or `parameters` does not have exactly their count.
    public init(layerSizes: [Int], activation: Activation, parameters: [Float]) throws(TrainingError) {
        let offsets = try Self.offsets(layerSizes)
        guard parameters.count == offsets.total else {
            throw TrainingError("layers \(Self.describe(layerSizes)) need \(offsets.total) parameters, got \(parameters.count)")
        }
        self.layerSizes = layerSizes
        self.activation = activation
        self.parameters = parameters
        self.weightOffsets = offsets.weights
    }

    /// PyTorch's default `nn.Linear` initialization: weights Kaiming-uniform with a = √5 and
    /// biases uniform, both in ±1/√fan_in, drawn from `seed` (the same seed gives the same model).
    public init(layerSizes: [Int], activation: Activation, seed: UInt64) throws(TrainingError) {
        let offsets = try Self.offsets(layerSizes)
        var generator = SplitMix64(seed: seed)
        var parameters = [Float](repeating: 0, count: offsets.total)
        var index = 0
        for layer in 0..<layerSizes.count - 1 {
            let fanIn = layerSizes[layer], fanOut = layerSizes[layer + 1]
            // gain √(2/(1+a²)) with a = √5, times √3/√fan_in: the bound is 1/√fan_in.
            let bound = 1 / Float(fanIn).squareRoot()
            for _ in 0..<(fanIn * fanOut + fanOut) {
                parameters[index] = (generator.nextUnitFloat() * 2 - 1) * bound
                index += 1
            }
        }
        try self.init(layerSizes: layerSizes, activation: activation, parameters: parameters)
    }

    public var layerCount: Int { layerSizes.count - 1 }
    public var inputWidth: Int { layerSizes[0] }
    public var outputWidth: Int { layerSizes[layerSizes.count - 1] }

    public func biasOffset(_ layer: Int) -> Int {
        weightOffsets[layer] + layerSizes[layer] * layerSizes[layer + 1]
    }

    /// Layer `layer`'s weight `[out, in]` and bias `[out]`.
    public func weight(_ layer: Int) -> [Float] {
        Array(parameters[weightOffsets[layer]..<biasOffset(layer)])
    }

    public func bias(_ layer: Int) -> [Float] {
        let start = biasOffset(layer)
        return Array(parameters[start..<start + layerSizes[layer + 1]])
    }

    /// Replaces layer `layer`'s weight and bias (PyTorch layout).
    public mutating func setLayer(_ layer: Int, weight: [Float], bias: [Float]) throws(TrainingError) {
        let inputs = layerSizes[layer], outputs = layerSizes[layer + 1]
        guard weight.count == inputs * outputs, bias.count == outputs else {
            throw TrainingError(
                "layer \(layer) is \(inputs)→\(outputs): expected a weight of \(outputs)×\(inputs) and a bias of \(outputs), got \(weight.count) and \(bias.count) values")
        }
        parameters.replaceSubrange(weightOffsets[layer]..<biasOffset(layer), with: weight)
        let start = biasOffset(layer)
        parameters.replaceSubrange(start..<start + outputs, with: bias)
    }

    static func describe(_ sizes: [Int]) -> String { sizes.map(String.init).joined(separator: ",") }

    private static func offsets(_ sizes: [Int]) throws(TrainingError) -> (weights: [Int], total: Int) {
        guard sizes.count >= 2 else {
            throw TrainingError("an MLP needs at least an input and an output width, got '\(describe(sizes))'")
        }
        guard sizes.allSatisfy({ $0 > 0 && $0 <= 1 << 20 }) else {
            throw TrainingError("layer widths must be between 1 and \(1 << 20), got '\(describe(sizes))'")
        }
        var weights: [Int] = []
        var total = 0
        for layer in 0..<sizes.count - 1 {
            weights.append(total)
            let (product, overflow) = sizes[layer].multipliedReportingOverflow(by: sizes[layer + 1])
            total += product + sizes[layer + 1]
            guard !overflow, total <= 1 << 31 else {
                throw TrainingError("layers '\(describe(sizes))' have more than 2^31 parameters")
            }
        }
        return (weights, total)
    }
}

/// The activation between layers.
public enum Activation: String, Sendable, CaseIterable {
    case relu, tanh, sigmoid, gelu, none
}

/// What went wrong while preparing or running training: bad arguments, data, or files.
public struct TrainingError: Error, CustomStringConvertible, Equatable {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

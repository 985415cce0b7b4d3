public import MaaSCore

/// The built-in model `maas serve` offers with no repository: the seed's Linear(10,20) → ReLU →
/// Linear(20,10), weights drawn like PyTorch's default initialization (uniform ±1/√fan_in)
/// from a fixed seed, so every server answers the same.
public enum SeedModel {
    public static let name = "seed"

    public static func graph() -> ModelGraph {
        var generator = SplitMix64(seed: 0x5eed)
        func uniform(_ count: Int, bound: Float) -> [Float] {
            (0..<count).map { _ in (Float(generator.next() >> 40) / Float(1 << 24) * 2 - 1) * bound }
        }
        func tensor(_ values: [Float], _ shape: [Int]) -> Tensor {
            // Sizes are constants here; the initializer cannot fail.
            try! Tensor(values, shape: shape)
        }
        let bound1 = 1 / Float(10).squareRoot(), bound2 = 1 / Float(20).squareRoot()
        return ModelGraph(
            name: "seed", producer: "maas",
            opsets: ["": 17],
            inputs: [ValueInfo(name: "input", dataType: .float32, shape: [.symbolic("batch"), .fixed(10)])],
            outputs: [ValueInfo(name: "output", dataType: .float32, shape: [.symbolic("batch"), .fixed(10)])],
            initializers: [
                "0.weight": tensor(uniform(200, bound: bound1), [20, 10]), "0.bias": tensor(uniform(20, bound: bound1), [20]),
                "2.weight": tensor(uniform(200, bound: bound2), [10, 20]), "2.bias": tensor(uniform(10, bound: bound2), [10]),
            ],
            nodes: [
                Node(name: "/0/Gemm", opType: "Gemm", inputs: ["input", "0.weight", "0.bias"], outputs: ["hidden"], attributes: ["transB": .int(1)]),
                Node(name: "/1/Relu", opType: "Relu", inputs: ["hidden"], outputs: ["activated"]),
                Node(name: "/2/Gemm", opType: "Gemm", inputs: ["activated", "2.weight", "2.bias"], outputs: ["output"], attributes: ["transB": .int(1)]),
            ])
    }
}

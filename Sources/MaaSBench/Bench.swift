import ArgumentParser
import Foundation
import MaaSCompute
import MaaSCore
import MaaSProto

/// `maas-bench`: measurements for scripts/bench-*, printed one result per line as `key=value`.
@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maas-bench",
        abstract: "Benchmarks for scripts/bench-*.",
        subcommands: [EngineBench.self, TrainBench.self]
    )
}

struct EngineBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine", abstract: "Forward passes per second of one model at one batch size.")

    @Option(help: "The .onnx model.") var model: String
    @Option(help: "Input shape, e.g. 8,512 (float32 random values).") var shape: String
    @Option(help: "Seconds to measure (after one warm-up pass).") var seconds = 3.0
    @Option(help: "Compute threads (default: all cores).") var threads: Int?

    func run() throws {
        let dims = shape.split(separator: ",").compactMap { Int($0) }
        let graph = try ONNXModel.load(path: model)
        let pool = threads.map { ComputePool(threadCount: $0) } ?? .shared
        let compiled = try CompiledModel(graph: graph, pool: pool)
        var generator = SystemRandomNumberGenerator()
        let count = dims.reduce(1, *)
        let values = (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
        let input = try Tensor(values, shape: dims)
        let feeds = [graph.inputs[0].name: input]
        _ = try compiled.run(feeds)
        let clock = ContinuousClock()
        let start = clock.now
        var runs = 0
        while clock.now - start < .milliseconds(Int(seconds * 1000)) {
            _ = try compiled.run(feeds)
            runs += 1
        }
        let elapsed = clock.now - start
        let secondsTaken = elapsed.inSeconds
        print("runs=\(runs) seconds=\(secondsTaken) samples_per_second=\(Double(runs * dims[0]) / secondsTaken)")
        for choice in try compiled.kernelChoices(for: [graph.inputs[0].name: dims]) { print("kernel \(choice)") }
    }
}

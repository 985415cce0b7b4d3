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
    @Option(help: "Input shape, e.g. 8,512, for every input (float inputs get random values; int64 ones token ids, or ones for an attention_mask, zeros for token_type_ids).")
    var shape: String
    @Option(help: "Seconds to measure (after one warm-up pass).") var seconds = 3.0
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Flag(help: "Also print the time per op type over the measured passes.") var profile = false

    func run() throws {
        let dims = shape.split(separator: ",").compactMap { Int($0) }
        let graph = try ONNXModel.load(path: model)
        let pool = threads.map { ComputePool(threadCount: $0) } ?? .shared
        let compiled = try CompiledModel(graph: graph, pool: pool)
        let feeds = try Self.feeds(for: graph, shape: dims)
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
        for choice in try compiled.kernelChoices(for: feeds.mapValues(\.shape)) { print("kernel \(choice)") }
        if profile {
            let profileStart = clock.now
            let totals = try compiled.profile(feeds, runs: max(1, runs))
            let wall = (clock.now - profileStart).inSeconds
            let all = totals.values.reduce(0, +)
            print("profile wall_ms_per_pass=\(String(format: "%.3f", wall * 1000 / Double(max(1, runs)))) steps_ms_per_pass=\(String(format: "%.3f", all * 1000 / Double(max(1, runs))))")
            for (op, seconds) in totals.sorted(by: { $0.value > $1.value }) {
                print("profile op=\(op) ms_per_pass=\(String(format: "%.3f", seconds * 1000 / Double(max(1, runs)))) share=\(String(format: "%.1f", 100 * seconds / all))%")
            }
        }
    }

    /// One tensor per graph input, all of `shape`: what a text model is sent (token ids from
    /// the common part of every vocabulary, a full attention mask, one segment) or random floats.
    static func feeds(for graph: ModelGraph, shape: [Int]) throws -> [String: Tensor] {
        var generator = SystemRandomNumberGenerator()
        let count = shape.reduce(1, *)
        var feeds: [String: Tensor] = [:]
        for input in graph.inputs {
            switch input.dataType {
            case .int64:
                let values: [Int64] = switch input.name {
                case "attention_mask": [Int64](repeating: 1, count: count)
                case "token_type_ids": [Int64](repeating: 0, count: count)
                default: (0..<count).map { _ in Int64.random(in: 1000..<2000, using: &generator) }
                }
                feeds[input.name] = try Tensor(values, shape: shape)
            case .bool:
                feeds[input.name] = try Tensor(zeros: .bool, shape: shape)
            default:
                feeds[input.name] = try Tensor((0..<count).map { _ in Float.random(in: -1...1, using: &generator) }, shape: shape)
            }
        }
        return feeds
    }
}

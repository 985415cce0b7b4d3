import ArgumentParser
import FoundationEssentials
import Glibc
import MaaSCompute
import MaaSCore
import MaaSProto

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one forward pass of an ONNX model locally, without a server.",
        discussion: """
            Each output is written as DIR/OUTPUT.npy (NumPy .npy v1, the dtype the model produces).
            Example: maas run model.onnx --input input=x.npy --output-dir out/
            """
    )

    @Argument(help: "The .onnx file (external data is read from beside it).")
    var model: String

    @Option(name: .customLong("input"), help: "NAME=FILE.npy, once per model input.")
    var inputs: [String] = []

    @Option(help: "Where to write OUTPUT.npy files (created if missing).")
    var outputDir = "."

    @Flag(help: "Also print the fused steps, which implementation each GEMM and convolution runs, and what each took when timed.")
    var verbose = false

    func run() async throws {
        do {
            let loadStart = ContinuousClock.now
            let graph = try ONNXModel.load(path: model)
            let compiled = try CompiledModel(graph: graph)
            let loadTime = ContinuousClock.now - loadStart
            var feeds: [String: Tensor] = [:]
            for argument in inputs {
                guard let equals = argument.firstIndex(of: "=") else {
                    throw ValidationError("--input takes NAME=FILE.npy, got '\(argument)'")
                }
                let name = String(argument[..<equals]), file = String(argument[argument.index(after: equals)...])
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw ValidationError("cannot read '\(file)'")
                }
                feeds[name] = try NPY.decode(Array(data), source: file)
            }
            let start = ContinuousClock.now
            let outputs = try compiled.run(feeds)
            let elapsed = ContinuousClock.now - start
            try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
            print("model \(model): loaded in \(format(loadTime))")
            for info in graph.outputs {
                let tensor = outputs[info.name]!
                let path = outputDir + "/" + String(info.name.map { $0 == "/" ? "_" : $0 }) + ".npy"
                try Data(try NPY.encode(tensor)).write(to: URL(fileURLWithPath: path))
                print("  \(info.name): \(tensor.dataType) \(tensor.shape) -> \(path)")
            }
            print("forward pass: \(format(elapsed))")
            if verbose {
                if let fused = compiled.fusionSummary { print("  fused: \(fused)") }
                for choice in try compiled.kernelChoices(for: feeds.mapValues(\.shape)) { print("  kernel \(choice)") }
            }
        } catch let error as InferenceError {
            Terminal.stderr("error: \(error.message)\n")
            throw ExitCode(1)
        }
    }

    private func format(_ duration: Duration) -> String {
        cFormat("%.3f ms", duration.inSeconds * 1000)
    }
}

// scripts/sanitize's runner: the C kernels (CMaaSKernels) and the protobuf-c paths (CMaaSProto),
// built with ASan + UBSan (the Swift above them with ASan), run once on inputs that make them do
// real work, in whatever kernel mode the environment forces (MAAS_KERNEL, MAAS_CONV,
// MAAS_NO_AVX512, as scripts/test sets them):
//   - every model in the directories given (the onnx fuzz corpus, the Tests fixtures): decoded
//     and re-encoded by protobuf-c, compiled, and run on the fixture's own inputs (outputs
//     compared with onnxruntime's) or on random ones (shapes checked against the plan);
//   - MatMul and Gemm of odd sizes, so that every GEMM kernel meets its edge tiles, checked
//     against a plain triple loop;
//   - a few training steps with each optimizer (Adam and AdamW run optimizer.c), then the
//     trained MLP exported and run;
//   - ModelInferRequest/Response, health and the management messages packed and unpacked by
//     protobuf-c, then every truncation and some corruptions of each unpacked again.
// A sanitizer report aborts the process; a wrong answer exits non-zero.
import FoundationEssentials
import Glibc
import MaaSCompute
import MaaSCore
import MaaSProto
import MaaSTraining

@main
struct SanitizeRun {
    static let pool = ComputePool(threadCount: 2)
    nonisolated(unsafe) static var failures = 0
    nonisolated(unsafe) static var compared = 0
    nonisolated(unsafe) static var random = SplitMix64(seed: 0x5a17)

    static func main() throws {
        setenv("MAAS_SPIN", "0", 1)
        var models = 0, runs = 0
        for directory in CommandLine.arguments.dropFirst() {
            let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".onnx") }.sorted()
            for name in names {
                runs += runModel(directory + "/" + name)
                models += 1
            }
        }
        let gemms = oddGEMMs()
        let steps = training()
        let messages = protobuf()
        print("sanitize: \(models) models (\(runs) runs, \(compared) outputs compared with onnxruntime's), \(gemms) odd GEMMs, \(steps) training runs, \(messages) protobuf messages; \(failures) failures")
        if failures > 0 { exit(1) }
    }

    static func fail(_ message: String) {
        failures += 1
        print("FAILED: \(message)")
    }

    // MARK: Models

    /// Loads, round-trips, compiles and runs one model; returns how many passes ran.
    static func runModel(_ path: String) -> Int {
        let graph: ModelGraph
        do {
            graph = try ONNXModel.load(path: path)
        } catch {
            // The fuzz corpus may hold models that are refused (its regressions, one whose
            // external data it lacks); a fixture must load.
            if !path.contains("Fuzz/corpus/") { fail("\(path) does not load: \(error)") }
            return 0
        }
        if let bytes = try? ONNXModel.encode(graph) {
            let again = bytes.withUnsafeBytes { buffer in Result { () throws(InferenceError) in try ONNXModel.decode(buffer) } }
            if case .failure(let error) = again { fail("\(path): the re-encoded model does not decode: \(error)") }
        }
        guard let model = try? CompiledModel(graph: graph, pool: pool, maxPlanBytes: 256 << 20) else { return 0 }
        let stem = String(path.dropLast(".onnx".count))
        let prefix = stem.split(separator: "/").last.map(String.init) ?? stem
        let directory = String(stem.dropLast(prefix.count))
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        // Fixtures name their inputs NAME.bB.in.INPUT.npy and onnxruntime's outputs NAME.bB.out.OUTPUT.npy.
        let cases = Set(files.filter { $0.hasPrefix(prefix + ".b") && $0.hasSuffix(".npy") }.map { $0.dropFirst(prefix.count + 1).prefix { $0 != "." } })
        var passes = 0
        if cases.isEmpty {
            for batch in [1, 3] {
                var feeds: [String: Tensor] = [:]
                for input in graph.inputs {
                    let shape = input.shape.map { dimension -> Int in
                        if case .fixed(let size) = dimension { return size }
                        return batch
                    }
                    feeds[input.name] = randomTensor(input.dataType, shape)
                }
                guard let outputs = try? model.run(feeds) else { continue }
                passes += 1
                let planned = try? model.outputShapes(for: feeds.mapValues(\.shape))
                for info in graph.outputs where outputs[info.name]?.shape != planned?[info.name] {
                    fail("\(path): output '\(info.name)' has shape \(String(describing: outputs[info.name]?.shape)), planned \(String(describing: planned?[info.name]))")
                }
            }
            return passes
        }
        for name in cases.sorted() {
            func arrays(_ kind: String) -> [String: Tensor] {
                var found: [String: Tensor] = [:]
                let start = "\(prefix).\(name).\(kind)."
                for file in files where file.hasPrefix(start) && file.hasSuffix(".npy") {
                    let key = String(file.dropFirst(start.count).dropLast(4))
                    guard let bytes = FileManager.default.contents(atPath: directory + file), let tensor = try? NPY.decode([UInt8](bytes), source: file) else {
                        fail("\(directory + file) does not read")
                        continue
                    }
                    found[key] = tensor
                }
                return found
            }
            let inputs = arrays("in"), expected = arrays("out")
            let outputs: [String: Tensor]
            do {
                outputs = try model.run(inputs)
            } catch {
                fail("\(path) case \(name): \(error)")
                continue
            }
            passes += 1
            for (output, want) in expected {
                guard let got = outputs[output] else {
                    fail("\(path) case \(name): no output '\(output)'")
                    continue
                }
                compare(got, want, "\(path) case \(name) output '\(output)'")
                compared += 1
            }
        }
        return passes
    }

    /// Floats within 1e-3 (relative above 1), everything else exactly.
    static func compare(_ got: Tensor, _ want: Tensor, _ label: String) {
        guard got.shape == want.shape, got.dataType == want.dataType else {
            return fail("\(label): \(got.dataType) \(got.shape), expected \(want.dataType) \(want.shape)")
        }
        if got.dataType == .float32 {
            let a = got.scalars(as: Float.self), b = want.scalars(as: Float.self)
            if let index = a.indices.first(where: { !(abs(a[$0] - b[$0]) <= 1e-3 * max(1, abs(b[$0]))) }) {
                fail("\(label): element \(index) is \(a[index]), expected \(b[index])")
            }
        } else if !got.withUnsafeBytes({ x in want.withUnsafeBytes { y in x.elementsEqual(y) } }) {
            fail("\(label): differs")
        }
    }

    /// Values a model can take: floats in [-2, 2], small integers (valid indices for most
    /// gathers; the rest are refused, which is fine), booleans.
    static func randomTensor(_ type: DataType, _ shape: [Int]) -> Tensor? {
        guard let count = try? Shape.elementCount(shape), count <= 1 << 20 else { return nil }
        func bytes<T>(_ make: () -> T) -> Tensor? {
            let values = (0..<count).map { _ in make() }
            return values.withUnsafeBytes { try? Tensor(dataType: type, shape: shape, bytes: $0) }
        }
        switch type {
        case .float32: return bytes { Float(Int64(random.next() % 4001) - 2000) / 1000 }
        case .float64: return bytes { Double(Int64(random.next() % 4001) - 2000) / 1000 }
        case .int64: return bytes { Int64(random.next() % 4) }
        case .int32: return bytes { Int32(random.next() % 4) }
        case .bool: return bytes { UInt8(random.next() % 2) }
        default: return try? Tensor(zeros: type, shape: shape)
        }
    }

    // MARK: GEMM edges

    /// MatMul (packed [K, N] weights) and Gemm with transB of sizes around the kernels' tiles.
    static func oddGEMMs() -> Int {
        var count = 0
        for m in [1, 2, 3, 5, 8, 13, 33] {
            for k in [1, 7, 33, 130] {
                for n in [1, 5, 16, 17, 63] {
                    for transposed in [false, true] {
                        let a = (0..<m * k).map { _ in Float(Int64(random.next() % 17) - 8) / 8 }
                        let b = (0..<k * n).map { _ in Float(Int64(random.next() % 17) - 8) / 8 }
                        let bias = (0..<n).map { _ in Float(Int64(random.next() % 17) - 8) / 8 }
                        // b is [k, n]; Gemm with transB takes it as [n, k].
                        let stored = transposed ? (0..<n * k).map { b[($0 % k) * n + $0 / k] } : b
                        let node = transposed
                            ? Node(name: "gemm", opType: "Gemm", inputs: ["a", "b", "bias"], outputs: ["y"], attributes: ["transB": .int(1)])
                            : Node(name: "matmul", opType: "MatMul", inputs: ["a", "b"], outputs: ["y"])
                        let graph = ModelGraph(
                            name: "gemm", producer: "sanitize", opsets: ["": 17],
                            inputs: [ValueInfo(name: "a", dataType: .float32, shape: [.symbolic("m"), .fixed(k)])],
                            outputs: [ValueInfo(name: "y", dataType: .float32, shape: [.symbolic("m"), .fixed(n)])],
                            initializers: ["b": try! Tensor(stored, shape: transposed ? [n, k] : [k, n]), "bias": try! Tensor(bias, shape: [n])],
                            nodes: [node])
                        do {
                            let model = try CompiledModel(graph: graph, pool: pool)
                            let y = try model.run(["a": try Tensor(a, shape: [m, k])])["y"]!.scalars(as: Float.self)
                            for row in 0..<m {
                                for column in 0..<n {
                                    var want: Float = transposed ? bias[column] : 0
                                    for i in 0..<k { want += a[row * k + i] * b[i * n + column] }
                                    let got = y[row * n + column]
                                    if abs(got - want) > 1e-3 * max(1, abs(want)) {
                                        fail("\(transposed ? "Gemm" : "MatMul") \(m)x\(k)x\(n) [\(row), \(column)] = \(got), expected \(want)")
                                    }
                                }
                            }
                        } catch {
                            fail("\(transposed ? "Gemm" : "MatMul") \(m)x\(k)x\(n): \(error)")
                        }
                        count += 1
                    }
                }
            }
        }
        return count
    }

    // MARK: Training

    /// A few epochs with each optimizer and loss; the trained MLP then runs as ONNX.
    static func training() -> Int {
        let recipes: [(sizes: [Int], activation: Activation, loss: Loss, optimizer: OptimizerConfiguration)] = [
            ([10, 20, 10], .relu, .mse, OptimizerConfiguration(kind: .adam, learningRate: 1e-2)),
            ([7, 16, 9, 3], .gelu, .crossEntropy, {
                var adamw = OptimizerConfiguration(kind: .adamw, learningRate: 1e-2)
                adamw.weightDecay = 0.01
                return adamw
            }()),
            ([6, 12, 4], .tanh, .mse, OptimizerConfiguration(kind: .sgd, learningRate: 0.05)),
            ([5, 33, 2], .sigmoid, .mse, {
                var sgd = OptimizerConfiguration(kind: .sgd, learningRate: 0.1)
                sgd.momentum = 0.9
                sgd.nesterov = true
                return sgd
            }()),
        ]
        var count = 0
        for recipe in recipes {
            let rows = 37, width = recipe.sizes[0], outputs = recipe.sizes.last!
            let features = (0..<rows * width).map { _ in Float(Int64(random.next() % 2001) - 1000) / 500 }
            let targets: TrainingData.Targets = recipe.loss == .mse
                ? .values((0..<rows * outputs).map { _ in Float(Int64(random.next() % 2001) - 1000) / 1000 }, width: outputs)
                : .classes((0..<rows).map { _ in Int32(random.next() % UInt64(outputs)) })
            do {
                let data = try TrainingData(features: features, featureWidth: width, targets: targets)
                let trainer = try Trainer(model: MLP(layerSizes: recipe.sizes, activation: recipe.activation, seed: 7), loss: recipe.loss,
                    optimizer: recipe.optimizer, pool: pool)
                let result = try trainer.fit(data, options: FitOptions(epochs: 5, batchSize: 8, shuffle: true, seed: 3))
                guard let last = result.epochs.last, last.trainingLoss.isFinite else { fail("\(recipe.sizes) \(recipe.optimizer.kind): loss is not finite"); continue }
                let exported = try CompiledModel(graph: trainer.model.graph(), pool: pool)
                let predicted = try exported.run(["input": try Tensor(features, shape: [rows, width])])["output"]!.scalars(as: Float.self)
                let direct = trainer.predict(features, rows: rows)
                if predicted.count != direct.count || zip(predicted, direct).contains(where: { abs($0 - $1) > 1e-3 * max(1, abs($1)) }) {
                    fail("\(recipe.sizes) \(recipe.optimizer.kind): the exported model disagrees with the trainer")
                }
                count += 1
            } catch {
                fail("training \(recipe.sizes) \(recipe.optimizer.kind): \(error)")
            }
        }
        return count
    }

    // MARK: protobuf-c

    /// Each message packed, unpacked and compared; then its truncations and byte corruptions
    /// unpacked (refused or decoded, never a sanitizer report).
    static func protobuf() -> Int {
        var messages: [(name: String, bytes: [UInt8], decode: (UnsafeRawBufferPointer) -> Bool)] = []
        let tensors: [(name: String, tensor: Tensor)] = [
            ("f", try! Tensor((0..<12).map { Float($0) / 3 }, shape: [3, 4])),
            ("i", try! Tensor((0..<5).map { Int64($0) - 2 }, shape: [5])),
            ("empty", try! Tensor(zeros: .float32, shape: [2, 0])),
            ("b", try! Tensor(zeros: .bool, shape: [1, 3])),
        ]
        let request = KServe.encodeInferRequest(model: "m", version: "3", id: "id-1", inputs: tensors, outputs: ["y", "z"])
        messages.append(("ModelInferRequest", request, { bytes in
            guard let decoded = try? InferenceRequest(serializedBytes: bytes) else { return false }
            return decoded.modelName == "m" && decoded.inputs.map(\.name) == tensors.map(\.name) && decoded.rawInputContents.count == tensors.count
        }))
        let response = InferenceResponse(modelName: "m", modelVersion: "3", id: "id-1", outputs: tensors)
        messages.append(("ModelInferResponse", response.serializedBytes(), { bytes in
            guard let decoded = try? InferenceResponse(serializedBytes: bytes) else { return false }
            return decoded.outputs.map(\.name) == tensors.map(\.name) && zip(decoded.outputs, tensors).allSatisfy { $0.tensor.shape == $1.tensor.shape }
        }))
        messages.append(("HealthCheckRequest", HealthCheckRequest(service: "inference.GRPCInferenceService").serializedBytes(), { bytes in
            (try? HealthCheckRequest(serializedBytes: bytes))?.service == "inference.GRPCInferenceService"
        }))
        messages.append(("HealthCheckResponse", HealthCheckResponse(status: .notServing).serializedBytes(), { bytes in
            (try? HealthCheckResponse(serializedBytes: bytes))?.status == .notServing
        }))
        let metadata = [TensorMetadata(name: "input", datatype: "FP32", shape: [-1, 10])]
        messages.append(("ModelMetadataResponse", KServe.encodeModelMetadata(name: "seed", versions: ["1", "2"], platform: "onnxruntime_onnx",
            inputs: metadata, outputs: metadata), { bytes in
            (try? KServe.decodeModelMetadata(bytes))?.versions == ["1", "2"]
        }))
        var config = ModelConfig(name: "seed")
        config.maxBatchSize = 8
        config.inputs = [ModelConfig.Tensor(name: "input", dataType: .float32, dims: [10])]
        config.outputs = [ModelConfig.Tensor(name: "output", dataType: .float32, dims: [10])]
        var batching = ModelConfig.DynamicBatching()
        batching.preferredBatchSizes = [4, 8]
        batching.defaultQueuePolicy = ModelConfig.QueuePolicy()
        config.dynamicBatching = batching
        messages.append(("ModelConfigResponse", KServe.encodeModelConfig(config), { bytes in
            (try? KServe.decodeModelConfig(bytes))?.maxBatchSize == 8
        }))
        let index = [KServe.ModelIndexEntry(name: "seed", version: "1", state: "READY", reason: ""),
                     KServe.ModelIndexEntry(name: "bad", version: "", state: "UNAVAILABLE", reason: "no model.onnx")]
        messages.append(("RepositoryIndexResponse", KServe.encodeIndex(index), { bytes in
            (try? KServe.decodeIndex(bytes))?.map(\.name) == ["seed", "bad"]
        }))
        messages.append(("RepositoryIndexRequest", KServe.encodeIndexRequest(readyOnly: true), { bytes in
            (try? KServe.decodeIndexRequest(bytes))?.readyOnly == true
        }))
        messages.append(("RepositoryModelLoadRequest", KServe.encodeModelControl(model: "seed", load: true), { bytes in
            (try? KServe.decodeModelControl(bytes, load: true))?.model == "seed"
        }))
        let duration = KServe.Statistics.Duration(count: 3, nanoseconds: 1234)
        let statistics = [KServe.Statistics(name: "seed", version: "1", lastInference: 5, inferenceCount: 9, executionCount: 4,
            success: duration, fail: duration, queue: duration, computeInput: duration, computeInfer: duration, computeOutput: duration,
            batches: [(size: 2, computeInfer: duration)])]
        messages.append(("ModelStatisticsResponse", KServe.encodeStatistics(statistics), { bytes in
            (try? KServe.decodeStatistics(bytes))?.first?.inferenceCount == 9
        }))
        messages.append(("ServerMetadataResponse", KServe.encodeServerMetadata(name: "maas", version: "0.1.0", extensions: ["statistics"]), { _ in true }))
        for (name, bytes, decode) in messages {
            if !bytes.withUnsafeBytes(decode) { fail("\(name) does not round-trip") }
            // Every truncation, and each byte flipped in turn: refused or decoded, without a report.
            for length in 0..<bytes.count { _ = bytes.prefix(length).withUnsafeBytes(decode) }
            for index in bytes.indices {
                var corrupted = bytes
                corrupted[index] ^= index % 2 == 0 ? 0xff : 0x80
                _ = corrupted.withUnsafeBytes(decode)
            }
        }
        return messages.count
    }
}

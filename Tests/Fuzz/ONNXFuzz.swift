// libFuzzer harness: the ONNX loader and compiler, as the model repository runs them on a
// model.onnx: protobuf-c's ModelProto decoding, ONNXModel's import and checks, CompiledModel
// (ops made, constants folded, weights packed, fusion), then the warm-up pass on zero inputs
// (a symbolic dimension is 1) through an execution plan. Properties: no crash, leak or hang;
// what decodes encodes back to the same graph; a pass gives every output its planned shape.
import CMaaSProto
import Glibc
import MaaSCore
import MaaSCompute
import MaaSProto

/// Plans may allocate this much, well under libFuzzer's -rss_limit_mb / -malloc_limit_mb: a model
/// whose shapes need more must be refused as the server refuses it, never allocated.
private let maxPlanBytes = 64 << 20

private let pool = ComputePool(threadCount: 2)

/// Which implementation each GEMM and Conv runs, picked from the input's size (so that a crash
/// reproduces from its file alone): timing them all would cost most of each run.
private let kernelModes = [
    ("panels,blas-rows", "direct,im2col"),
    ("blas-rows", "im2col"),
    ("blas-columns,blas-rows", "im2col-blas"),
]

@_cdecl("LLVMFuzzerInitialize")
public func fuzzONNXInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>) -> CInt {
    // Idle pool threads would spin for the next pass and take the core from the fuzzer.
    setenv("MAAS_SPIN", "0", 1)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzONNX(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let (gemm, conv) = kernelModes[size % kernelModes.count]
    setenv("MAAS_KERNEL", gemm, 1)
    setenv("MAAS_CONV", conv, 1)
    let graph: ModelGraph
    switch Result(catching: { () throws(InferenceError) in try ONNXModel.decode(UnsafeRawBufferPointer(start: data, count: size)) }) {
    case .success(let decoded): graph = decoded
    case .failure(let error):
        // ONNXModel reads the nesting depth before protobuf-c's unpack: it may call malformed
        // only what protobuf-c refuses too.
        if error.message.contains("protobuf decoding failed"), let model = onnx__model_proto__unpack(nil, size, data) {
            onnx__model_proto__free_unpacked(model, nil)
            preconditionFailure("refused as malformed protobuf, but protobuf-c decodes it")
        }
        return 0
    }
    checkRoundTrip(graph)
    guard let model = try? CompiledModel(graph: graph, pool: pool, maxPlanBytes: maxPlanBytes) else { return 0 }
    // ModelRepository's warm-up: every input zero, symbolic dimensions (the batch) 1.
    var shapes: [String: [Int]] = [:]
    for input in graph.inputs {
        shapes[input.name] = input.shape.map { dimension in
            if case .fixed(let size) = dimension { return size }
            return 1
        }
    }
    guard let feeds = try? model.zeroInputs(shapes) else { return 0 }
    guard let outputs = try? model.run(feeds) else { return 0 }
    let planned = try? model.outputShapes(for: shapes)
    for info in graph.outputs {
        guard let tensor = outputs[info.name] else { preconditionFailure("no output '\(info.name)' after a pass") }
        precondition(planned?[info.name] == tensor.shape, "output '\(info.name)' has shape \(tensor.shape), planned \(String(describing: planned?[info.name]))")
    }
    return 0
}

/// A decoded graph, written with ONNXModel.encode and read again, is the same graph.
private func checkRoundTrip(_ graph: ModelGraph) {
    // Graphs with attributes encode cannot write (subgraphs, sparse tensors) are not compared.
    guard let bytes = try? ONNXModel.encode(graph) else { return }
    let decoded = bytes.withUnsafeBytes { buffer in Result { () throws(InferenceError) in try ONNXModel.decode(buffer) } }
    guard case .success(let again) = decoded else {
        preconditionFailure("an encoded graph does not decode: \(decoded)")
    }
    precondition(again.name == graph.name && again.opsets == graph.opsets && again.metadata == graph.metadata, "graph fields differ after a round trip")
    precondition(again.inputs == graph.inputs && again.outputs == graph.outputs, "inputs or outputs differ after a round trip")
    precondition(again.initializers.keys == graph.initializers.keys, "initializer names differ after a round trip")
    for (name, tensor) in graph.initializers {
        precondition(same(tensor, again.initializers[name]!), "initializer '\(name)' differs after a round trip")
    }
    precondition(again.nodes.count == graph.nodes.count, "node count differs after a round trip")
    for (a, b) in zip(graph.nodes, again.nodes) {
        precondition(a.name == b.name && a.opType == b.opType && a.domain == b.domain && a.inputs == b.inputs && a.outputs == b.outputs,
            "\(a.label) differs after a round trip")
        precondition(a.attributes.keys == b.attributes.keys, "\(a.label): attribute names differ after a round trip")
        for (name, value) in a.attributes {
            precondition(same(value, b.attributes[name]!), "\(a.label): attribute '\(name)' differs after a round trip")
        }
    }
}

private func same(_ a: Tensor, _ b: Tensor) -> Bool {
    a.dataType == b.dataType && a.shape == b.shape && a.withUnsafeBytes { x in b.withUnsafeBytes { y in x.elementsEqual(y) } }
}

/// Attribute equality with floats compared bit for bit (NaN attributes are still the same).
private func same(_ a: Attribute, _ b: Attribute) -> Bool {
    switch (a, b) {
    case (.float(let x), .float(let y)): x.bitPattern == y.bitPattern
    case (.int(let x), .int(let y)): x == y
    case (.string(let x), .string(let y)): x == y
    case (.tensor(let x), .tensor(let y)): same(x, y)
    case (.floats(let x), .floats(let y)): x.map(\.bitPattern) == y.map(\.bitPattern)
    case (.ints(let x), .ints(let y)): x == y
    case (.strings(let x), .strings(let y)): x == y
    default: false
    }
}

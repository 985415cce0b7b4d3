import MaaSCore
import MaaSProto
import Testing

@Suite("ONNX ModelProto decoding")
struct ONNXModelTests {
    /// A ModelProto whose graph holds one node whose graph attribute holds a graph ... `depth`
    /// times (GraphProto.node → NodeProto.attribute → AttributeProto.g), with opset 17: messages
    /// nest 2 + 3 × `depth` deep.
    static func nestedGraphs(_ depth: Int) -> [UInt8] {
        func varint(_ value: Int) -> [UInt8] {
            var value = UInt64(value)
            var bytes: [UInt8] = []
            while value >= 0x80 {
                bytes.append(UInt8(value & 0x7f) | 0x80)
                value >>= 7
            }
            return bytes + [UInt8(value)]
        }
        // Built inside out as prefixes, so that the whole thing is written once.
        var heads: [[UInt8]] = []
        var length = 0
        for _ in 0..<depth {
            for field in [6, 5, 1] {  // AttributeProto.g, NodeProto.attribute, GraphProto.node
                let head = varint(field << 3 | 2) + varint(length)
                length += head.count
                heads.append(head)
            }
        }
        let graph = heads.reversed().flatMap { $0 }
        let opset: [UInt8] = [0x0a, 0x00, 0x10, 17]  // OperatorSetIdProto { domain: "", version: 17 }
        return [0x08, 8] + varint(7 << 3 | 2) + varint(graph.count) + graph + varint(8 << 3 | 2) + varint(opset.count) + opset
    }

    /// Found while writing the onnx fuzz harness: 3,000 nested graphs (30 KB) overflowed the
    /// stack inside protobuf-c's recursive unpack; the depth is now read first and refused.
    @Test(arguments: [33, 3_000, 50_000])
    func deeplyNestedGraphsAreRefusedBeforeUnpacking(depth: Int) {
        let bytes = Self.nestedGraphs(depth)
        #expect {
            try bytes.withUnsafeBytes { buffer in try ONNXModel.decode(buffer, source: "deep.onnx") }
        } throws: { error in
            let e = error as? InferenceError
            return e?.code == .invalidArgument && e?.message.contains("deep.onnx: messages nest more than 100 deep") == true
        }
    }

    /// Within the limit (32 graphs nest 98 deep, 33 are 101) the model decodes; the subgraph
    /// attribute is kept as unsupported, for the op to refuse.
    @Test func nestingWithinTheLimitDecodes() throws {
        let bytes = Self.nestedGraphs(32)
        let graph = try bytes.withUnsafeBytes { buffer in try ONNXModel.decode(buffer) }
        #expect(graph.nodes.count == 1)
        guard case .unsupported? = graph.nodes.first?.attributes[""] else {
            Issue.record("expected the nested graph as an unsupported attribute, got \(String(describing: graph.nodes.first?.attributes))")
            return
        }
    }

    /// Broken framing is still the protobuf decoding error, wherever the nesting check stops.
    @Test(arguments: [1, 7, 20, 50])
    func truncatedModelsAreMalformed(cut: Int) {
        let bytes = Array(Self.nestedGraphs(10).dropLast(cut))
        #expect {
            try bytes.withUnsafeBytes { buffer in try ONNXModel.decode(buffer, source: "cut.onnx") }
        } throws: { ($0 as? InferenceError)?.message.contains("cut.onnx: not a valid ONNX model (protobuf decoding failed") == true }
    }
}

import MaaSCore
import MaaSProto
import Testing

@Suite("KServe client codec")
struct KServeClientTests {
    /// A ModelInferResponse written by hand: outputs (5) = {name "y", datatype, shape [2]},
    /// raw_output_contents (6) = `raw`.
    func response(datatype: String, raw: [UInt8]) -> [UInt8] {
        let tensor: [UInt8] = [0x0A, 1, UInt8(ascii: "y"), 0x12, UInt8(datatype.utf8.count)] + Array(datatype.utf8) + [0x1A, 1, 2]
        return [0x2A, UInt8(tensor.count)] + tensor + [0x32, UInt8(raw.count)] + raw
    }

    @Test func decodesRawOutputs() throws {
        let bytes = response(datatype: "FP32", raw: [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40])
        let decoded = try bytes.withUnsafeBytes { try InferenceResponse(serializedBytes: $0) }
        #expect(decoded.outputs.count == 1 && decoded.outputs[0].name == "y")
        #expect(decoded.outputs[0].tensor.scalars(as: Float.self) == [1, 2])
    }

    @Test(arguments: [
        ("FP32", [0, 0, 0x80, 0x3F] as [UInt8], "output 'y': 4 bytes of raw_output_contents for shape [2] of FP32, which needs 8"),
        ("BYTES", [1, 2] as [UInt8], "output 'y' has datatype BYTES, which this client does not decode"),
        ("FP17", [1, 2] as [UInt8], "output 'y' has datatype FP17, which this client does not decode"),
    ])
    func refusesResponsesThatDoNotAddUp(datatype: String, raw: [UInt8], message: String) {
        let bytes = response(datatype: datatype, raw: raw)
        #expect { try bytes.withUnsafeBytes { try InferenceResponse(serializedBytes: $0) } } throws: {
            ($0 as? InferenceError)?.message == message
        }
    }

    /// The same output with its values in typed contents (5): fp32_contents (6), packed.
    func typedResponse(values: [Float]) -> [UInt8] {
        let floats = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let contents: [UInt8] = [0x32, UInt8(floats.count)] + floats
        let tensor: [UInt8] = [0x0A, 1, UInt8(ascii: "y"), 0x12, 4] + Array("FP32".utf8) + [0x1A, 1, 2, 0x2A, UInt8(contents.count)] + contents
        return [0x2A, UInt8(tensor.count)] + tensor
    }

    @Test func decodesTypedOutputsAndChecksTheirCount() throws {
        let decoded = try typedResponse(values: [1, 2]).withUnsafeBytes { try InferenceResponse(serializedBytes: $0) }
        #expect(decoded.outputs[0].tensor.scalars(as: Float.self) == [1, 2])
        #expect(throws: InferenceError(.internal, "output 'y' has 3 values in fp32_contents for shape [2]")) {
            try typedResponse(values: [1, 2, 3]).withUnsafeBytes { try InferenceResponse(serializedBytes: $0) }
        }
    }

    @Test func refusesGarbage() {
        let garbage: [UInt8] = [0xFF, 0xFF, 0xFF]
        #expect(throws: InferenceError(.internal, "not a valid inference.ModelInferResponse (3 bytes)")) {
            try garbage.withUnsafeBytes { try InferenceResponse(serializedBytes: $0) }
        }
    }
}

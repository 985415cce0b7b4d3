import MaaSCore
@testable import MaaSProto
import Testing

@Suite("Arena for protobuf-c messages")
struct CArenaTests {
    /// Allocations past the first block come from malloc; none may overlap or lose its contents.
    @Test func allocationsStayDistinctBeyondTheBlock() {
        let arena = CArena()
        var strings: [(UnsafeMutablePointer<CChar>, String)] = []
        var arrays: [(UnsafeMutablePointer<Int64>, [Int64])] = []
        for index in 0..<300 {
            let text = String(repeating: "x", count: index % 40) + "\(index)"
            strings.append((arena.string(text), text))
            let values = (0..<Int64(index % 7 + 1)).map { $0 * Int64(index) }
            arrays.append((arena.array(values), values))
        }
        for (pointer, text) in strings { #expect(String(cString: pointer) == text) }
        for (pointer, values) in arrays {
            #expect(Array(UnsafeBufferPointer(start: pointer, count: values.count)) == values)
            #expect(Int(bitPattern: pointer) % MemoryLayout<Int64>.alignment == 0)
        }
    }

    /// A response bigger than the arena's block (many outputs, long names) encodes the same way
    /// through both entry points.
    @Test func largeResponsesEncode() throws {
        let outputs = try (0..<64).map { index in
            (String(repeating: "output", count: 10) + "\(index)", try Tensor([Float(index), 1, 2], shape: [1, 3]))
        }
        let response = InferenceResponse(modelName: "m", modelVersion: "1", id: String(repeating: "i", count: 500), outputs: outputs)
        let direct = response.serializedBytes()
        let viaClosure = response.withSerializedBytes { Array($0) }
        #expect(direct == viaClosure)
        #expect(direct.count > 64 * 60)
    }
}

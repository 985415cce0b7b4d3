import MaaSJSON
import Testing

@Suite struct PrettyJSONWriterTests {
    private func text(_ value: JSONValue, indent: Int = 0) -> String {
        var writer = JSONWriter(indent: indent)
        writer.value(value)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    @Test func compactByDefault() {
        #expect(text(["a": [1, 2], "b": [:], "c": []]) == #"{"a":[1,2],"b":{},"c":[]}"#)
    }

    @Test func indentedWithEmptyContainersOnOneLine() {
        let value: JSONValue = ["name": "m", "dims": [1, -1], "empty": [:], "nested": ["x": true]]
        #expect(text(value, indent: 2) == """
            {
              "name": "m",
              "dims": [
                1,
                -1
              ],
              "empty": {},
              "nested": {
                "x": true
              }
            }
            """)
    }

    @Test func indentedOutputReadsBackTheSame() throws {
        let value: JSONValue = ["a": [["b": .string("q\"\n")], .null, .double(0.5)], "c": .int(UInt64.max)]
        let bytes = Array(text(value, indent: 4).utf8)
        #expect(try bytes.withUnsafeBytes { try JSONReader.parse($0) } == value)
    }

    @Test func sortingKeysIsRecursive() {
        #expect(text((["b": ["d": 1, "c": 2], "a": 3] as JSONValue).sortingKeys()) == #"{"a":3,"b":{"c":2,"d":1}}"#)
    }

    @Test func duplicateKeysAreFound() throws {
        let bytes = Array(#"{"a": 1, "b": 2, "a": 3}"#.utf8)
        let value = try bytes.withUnsafeBytes { try JSONReader.parse($0) }
        #expect(value.duplicateKey == "a")
        #expect((["a": 1, "b": 2] as JSONValue).duplicateKey == nil)
    }

    @Test func describeQuotesShortScalarsOnly() {
        #expect(JSONValue.describe(nil) == "nothing")
        #expect(JSONValue.describe("x") == "\"x\"")
        #expect(JSONValue.describe(.string(String(repeating: "y", count: 50))) == "\"\(String(repeating: "y", count: 40))...\"")
        #expect(JSONValue.describe(2.5) == "2.5")
        #expect(JSONValue.describe([1]) == "an array")
    }
}

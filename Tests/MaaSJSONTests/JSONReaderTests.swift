import MaaSJSON
import Testing

private func parse(_ text: String, deferring: [String] = []) throws -> JSONValue {
    let bytes = Array(text.utf8)
    return try bytes.withUnsafeBytes { buffer in try JSONReader.parse(buffer, deferring: deferring) }
}

private func failure(_ text: String) -> JSONError? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return error as? JSONError
    }
}

@Suite struct JSONReaderTests {
    @Test func documentsKeepOrderAndTypes() throws {
        let value = try parse(#" {"b": [1, -2.5, true, null, "x"], "a": {"c": false}} "#)
        #expect(value.members?.map(\.key) == ["b", "a"])
        #expect(value["b"] == .array([.number(.int(1)), .number(.double(-2.5)), .bool(true), .null, .string("x")]))
        #expect(value["a"]?["c"] == .bool(false))
    }

    @Test func integersStayExactToSixtyFourBits() throws {
        #expect(try parse("9223372036854775807") == .number(.int(.max)))
        #expect(try parse("-9223372036854775808") == .number(.int(.min)))
        #expect(try parse("18446744073709551615") == .number(.uint(.max)))
        // One past UInt64, and a fraction or exponent, are doubles.
        #expect(try parse("18446744073709551616") == .number(.double(18446744073709551616)))
        #expect(try parse("-9223372036854775809") == .number(.double(-9.223372036854775809e18)))
        #expect(try parse("2.0").number?.int64 == 2)
        #expect(try parse("1e2").number?.int64 == 100)
        #expect(try parse("2.5").number?.int64 == nil)
        #expect(try parse("-0") == .number(.int(0)))
        #expect(try parse("0.1") == .number(.double(0.1)))
        #expect(failure("1e400")?.description == "the number 1e400 is out of range at byte 0")
        #expect(failure("[-4e4444]")?.message == "the number -4e4444 is out of range")
        #expect(try parse("1.7976931348623157e308").number?.double == .greatestFiniteMagnitude)
    }

    @Test func stringsDecodeEscapesAndSurrogates() throws {
        #expect(try parse(#""a\"b\\c\/d\b\f\n\r\t""#) == .string("a\"b\\c/d\u{8}\u{C}\n\r\t"))
        #expect(try parse(#""\u00e9\u4e2d\ud83d\ude00""#) == .string("é中😀"))
        #expect(try parse("\"é中😀\"") == .string("é中😀"))
    }

    @Test(arguments: [
        ("", "unexpected end of the document at byte 0"),
        ("{", "expected a member name in quotes, got the end of the document at byte 1"),
        (#"{"a" 1}"#, "expected ':' after \"a\", got '1' at byte 5"),
        (#"{"a": 1,}"#, "expected a member name in quotes, got '}' at byte 8"),
        ("[1 2]", "expected ',' or ']' in an array, got '2' at byte 3"),
        ("[1,]", "expected a value, got ']' at byte 3"),
        ("01", "a number must not start with 0 at byte 1"),
        ("1.", "expected a digit after '.', got the end of the document at byte 2"),
        ("1e", "expected a digit in the exponent, got the end of the document at byte 2"),
        ("-", "expected a digit, got the end of the document at byte 1"),
        ("+1", "expected a value, got '+' at byte 0"),
        ("NaN", "expected a value, got 'N' at byte 0"),
        ("tru", "expected a value, got 't' at byte 0"),
        ("1 2", "unexpected '2' after the document at byte 2"),
        ("\"abc", "a string does not end at byte 0"),
        ("\"a\nb\"", "a control character must be escaped in a string at byte 2"),
        (#""\x""#, "unknown escape '\\x' at byte 1"),
        (#""\u12""#, "a \\u escape needs 4 hex digits at byte 3"),
        (#""\ud800""#, "a \\u escape of a high surrogate must be followed by a low one at byte 7"),
        (#""\udc00""#, "a \\u escape of a low surrogate has no high one before it at byte 7"),
    ])
    func malformedDocumentsSayWhatAndWhere(text: String, message: String) {
        #expect(failure(text)?.description == message)
    }

    @Test func invalidUTF8IsRefused() {
        let bytes: [UInt8] = [0x22, 0xC3, 0x28, 0x22]
        #expect(throws: JSONError.self) {
            try bytes.withUnsafeBytes { try JSONReader.parse($0) }
        }
    }

    @Test func nestingIsBounded() throws {
        let deep = String(repeating: "[", count: JSONReader.maxDepth + 1) + String(repeating: "]", count: JSONReader.maxDepth + 1)
        #expect(failure(deep)?.message == "nested deeper than \(JSONReader.maxDepth) levels")
        let deepObjects = String(repeating: #"{"a":"#, count: JSONReader.maxDepth + 1) + "1" + String(repeating: "}", count: JSONReader.maxDepth + 1)
        #expect(failure(deepObjects)?.message == "nested deeper than \(JSONReader.maxDepth) levels")
        let ok = String(repeating: "[", count: JSONReader.maxDepth) + String(repeating: "]", count: JSONReader.maxDepth)
        #expect(try parse(ok).array != nil)
        // Deferred values are checked to the same depth.
        #expect(throws: JSONError.self) { try parse(#"{"data": "# + deep + "}", deferring: ["data"]) }
    }

    @Test func deferredValuesAreCheckedAndWalkedInRowMajorOrder() throws {
        let text = #"{"shape": [2, 2], "data": [[1, 2], [3, [4]]], "x": 1}"#
        let bytes = Array(text.utf8)
        struct Recorder: NestedArrayVisitor {
            var events: [String] = []
            mutating func enterArray(at path: [Int]) { events.append("enter \(path)") }
            mutating func exitArray(at path: [Int], count: Int) { events.append("exit \(path) \(count)") }
            mutating func element(_ value: JSONValue, at path: [Int]) { events.append("\(value.number!.int64!) at \(path)") }
        }
        var recorder = Recorder()
        try bytes.withUnsafeBytes { buffer in
            let root = try JSONReader.parse(buffer, deferring: ["data"])
            guard case .deferred(let range)? = root["data"] else { Issue.record("data was not deferred"); return }
            #expect(String(decoding: bytes[range], as: UTF8.self) == "[[1, 2], [3, [4]]]")
            #expect(root["x"] == .number(.int(1)))
            try JSONReader.walkNested(buffer, range, &recorder)
        }
        #expect(recorder.events == [
            "enter []", "enter [0]", "1 at [0, 0]", "2 at [0, 1]", "exit [0] 2",
            "enter [1]", "3 at [1, 0]", "enter [1, 1]", "4 at [1, 1, 0]", "exit [1, 1] 1", "exit [1] 2", "exit [] 2",
        ])
        #expect(throws: JSONError.self) { try parse(#"{"data": [1, 2,]}"#, deferring: ["data"]) }
    }
}

@Suite struct JSONWriterTests {
    @Test func writesCompactJSONThatReadsBack() throws {
        var writer = JSONWriter()
        writer.value(.object([
            ("s", .string("q\"\\\n\u{1}é")), ("n", .array([.number(.int(-12)), .number(.uint(.max)), .number(.double(0.5))])),
            ("b", .bool(false)), ("z", .null), ("e", .object([])), ("a", .array([])),
        ]))
        let text = String(decoding: writer.bytes, as: UTF8.self)
        #expect(text == #"{"s":"q\"\\\n\u0001é","n":[-12,18446744073709551615,0.5],"b":false,"z":null,"e":{},"a":[]}"#)
        #expect(try parse(text)["s"] == .string("q\"\\\n\u{1}é"))
    }

    /// Float's description is the shortest decimal that reads back as the same Float; read as
    /// the nearest double and then rounded to Float it must give the same bits.
    @Test func floatsReadBackBitForBit() throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        var writer = JSONWriter()
        var expected: [Float] = []
        writer.beginArray()
        while expected.count < 50_000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let value = Float(bitPattern: UInt32(truncatingIfNeeded: state >> 32))
            guard value.isFinite else { continue }
            expected.append(value)
            writer.float(value)
        }
        writer.endArray()
        let values = try writer.bytes.withUnsafeBytes { try JSONReader.parse($0) }.array ?? []
        #expect(values.count == expected.count)
        for (value, original) in zip(values, expected) where Float(value.number!.double).bitPattern != original.bitPattern {
            Issue.record("\(original) came back as \(Float(value.number!.double))")
            break
        }
    }

    @Test func nonFiniteNumbersUsePythonsSpelling() {
        var writer = JSONWriter()
        writer.beginArray()
        writer.float(.nan)
        writer.float(.infinity)
        writer.double(-.infinity)
        writer.endArray()
        #expect(String(decoding: writer.bytes, as: UTF8.self) == "[NaN,Infinity,-Infinity]")
    }
}

@Suite struct JSONPullReaderTests {
    @Test func readsObjectsArraysAndRawRangesInOnePass() throws {
        let text = #"{"name": "x", "skip": {"deep": [1, {"a": null}]}, "da\u0074a": [[1, 2], [3]], "list": [true, 2.5]}"#
        let bytes = Array(text.utf8)
        var name = "", raw = "", keys: [String] = [], list: [JSONValue] = []
        try bytes.withUnsafeBytes { buffer in
            var reader = JSONReader(buffer)
            try reader.readObject { reader, key in
                keys.append(key.string)
                if key == "name" {
                    name = try reader.readValue().string ?? ""
                } else if key == "data" {
                    raw = String(decoding: bytes[try reader.readRaw()], as: UTF8.self)
                } else if key == "list" {
                    try reader.readArray { reader, _ in list.append(try reader.readValue()) }
                } else {
                    _ = try reader.readRaw()
                }
            }
            try reader.finish()
        }
        #expect(keys == ["name", "skip", "data", "list"])
        #expect(name == "x" && raw == "[[1, 2], [3]]" && list == [.bool(true), .number(.double(2.5))])
    }

    @Test func malformedInputIsAJSONError() {
        for text in [#"{"a" 1}"#, #"{"a": [1 2]}"#, #"{"a": 1} x"#, "[", #"{"a": {"b": }}"#] {
            let bytes = Array(text.utf8)
            #expect(throws: JSONError.self, "\(text)") {
                try bytes.withUnsafeBytes { buffer in
                    var reader = JSONReader(buffer)
                    try reader.readObject { reader, _ in
                        if reader.nextKind() == .array {
                            try reader.readArray { reader, _ in _ = try reader.readValue() }
                        } else {
                            _ = try reader.readRaw()
                        }
                    }
                    try reader.finish()
                }
            }
        }
    }

    @Test func nestingIsBoundedAsInTheTree() {
        let deep = String(repeating: "[", count: JSONReader.maxDepth + 1) + String(repeating: "]", count: JSONReader.maxDepth + 1)
        let bytes = Array(deep.utf8)
        func descend(_ reader: inout JSONReader) throws {
            try reader.readArray { reader, _ in try descend(&reader) }
        }
        #expect(throws: JSONError.self) {
            try bytes.withUnsafeBytes { buffer in
                var reader = JSONReader(buffer)
                try descend(&reader)
            }
        }
    }
}

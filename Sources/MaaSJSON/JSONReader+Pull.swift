/// Reading a document as a stream of values, for decoders that know the shape they expect: no
/// tree is built, object keys are compared as bytes, and a value can be taken as its raw range
/// (checked, not built) for a typed pass later. Errors other than ``JSONError`` thrown by the
/// caller's closures pass through unchanged.
extension JSONReader {
    /// What the next value is, by its first byte; nil at the end or before a byte that starts
    /// no value.
    public enum Kind: Sendable {
        case object, array, string, number, bool, null
    }

    /// An object member's name, as the bytes between its quotes when it has no escapes.
    public struct Key {
        fileprivate let raw: UnsafeRawBufferPointer?
        fileprivate let decoded: String?

        public static func == (key: Key, name: StaticString) -> Bool {
            if let raw = key.raw {
                return name.withUTF8Buffer { $0.elementsEqual(raw) }
            }
            return key.decoded == name.withUTF8Buffer { String(decoding: $0, as: UTF8.self) }
        }

        public var string: String {
            decoded ?? String(decoding: raw!, as: UTF8.self)
        }
    }

    public mutating func nextKind() -> Kind? {
        skipWhitespaceForPull()
        guard let byte = currentByte else { return nil }
        switch byte {
        case UInt8(ascii: "{"): return .object
        case UInt8(ascii: "["): return .array
        case UInt8(ascii: "\""): return .string
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool
        case UInt8(ascii: "n"): return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number
        default: return nil
        }
    }

    /// Reads an object, calling `member` with each key; `member` must read (or skip) the value.
    public mutating func readObject(_ member: (inout JSONReader, Key) throws -> Void) throws {
        guard nextKind() == .object else { throw pullError("expected an object") }
        try enterNesting()
        advance()
        if consume(UInt8(ascii: "}")) { return leaveNesting() }
        while true {
            guard nextKind() == .string else { throw pullError("expected a member name in quotes") }
            let key = try readKey()
            guard consume(UInt8(ascii: ":")) else { throw pullError("expected ':' after \"\(key.string)\"") }
            try member(&self, key)
            if consume(UInt8(ascii: ",")) { continue }
            if consume(UInt8(ascii: "}")) { return leaveNesting() }
            throw pullError("expected ',' or '}' in an object")
        }
    }

    /// Reads an array, calling `element` with each index; `element` must read (or skip) the value.
    public mutating func readArray(_ element: (inout JSONReader, Int) throws -> Void) throws {
        guard nextKind() == .array else { throw pullError("expected an array") }
        try enterNesting()
        advance()
        if consume(UInt8(ascii: "]")) { return leaveNesting() }
        var index = 0
        while true {
            try element(&self, index)
            index += 1
            if consume(UInt8(ascii: ",")) { continue }
            if consume(UInt8(ascii: "]")) { return leaveNesting() }
            throw pullError("expected ',' or ']' in an array")
        }
    }

    /// The next value, built (for small values: parameters, ids).
    public mutating func readValue() throws(JSONError) -> JSONValue {
        try valueForPull()
    }

    /// The next value's bytes, checked to be well-formed JSON, without building it.
    public mutating func readRaw() throws(JSONError) -> Range<Int> {
        skipWhitespaceForPull()
        let start = offset
        try skipValueForPull()
        return start..<offset
    }

    private mutating func readKey() throws(JSONError) -> Key {
        let start = offset + 1
        var scan = start
        while let byte = byte(at: scan), byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\"), byte >= 0x20, byte < 0x80 {
            scan += 1
        }
        if byte(at: scan) == UInt8(ascii: "\"") {
            moveTo(scan + 1)
            return Key(raw: slice(start..<scan), decoded: nil)
        }
        return Key(raw: nil, decoded: try stringForPull())
    }

    private func pullError(_ expected: String) -> JSONError {
        JSONError(message: "\(expected), got \(describeNextForPull())", offset: offset)
    }
}

/// A malformed document: what was expected, and the byte offset where it was not found.
public struct JSONError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var offset: Int

    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict RFC 8259 reader over bytes the caller keeps alive: no Foundation, no `Any`, typed
/// numbers. Values under the keys it is told to defer are checked and skipped, not built, so a
/// large tensor's `data` costs its typed bytes only (see ``walkNested(_:_:)``), never a tree of
/// values 20 times the body's size.
public struct JSONReader {
    /// Nesting past this is refused: tensors have at most a few dimensions, and recursion must
    /// not be driven by the client.
    public static let maxDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    /// A list, not a set: one or two names, compared without hashing every key.
    private let deferring: [String]
    /// Nesting of the pull API's objects and arrays, bounded like the tree's.
    private var pullNesting = 0

    public init(_ bytes: UnsafeRawBufferPointer, deferring: [String] = []) {
        self.bytes = bytes
        self.deferring = deferring
    }

    /// The document's one value; members named in `deferring` come back as `.deferred(range)`.
    public static func parse(_ bytes: UnsafeRawBufferPointer, deferring: [String] = []) throws(JSONError) -> JSONValue {
        var reader = JSONReader(bytes, deferring: deferring)
        let value = try reader.value(depth: 0)
        reader.skipWhitespace()
        guard reader.position == bytes.count else { throw reader.error("unexpected \(reader.describeNext()) after the document") }
        return value
    }

    // MARK: Values

    private mutating func value(depth: Int) throws(JSONError) -> JSONValue {
        skipWhitespace()
        guard position < bytes.count else { throw error("unexpected end of the document") }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try object(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth + 1 <= Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
            position += 1
            var elements: [JSONValue] = []
            skipWhitespace()
            if peek(UInt8(ascii: "]")) { return .array(elements) }
            while true {
                elements.append(try value(depth: depth + 1))
                skipWhitespace()
                if peek(UInt8(ascii: ",")) { continue }
                if peek(UInt8(ascii: "]")) { return .array(elements) }
                throw error("expected ',' or ']' in an array, got \(describeNext())")
            }
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw error("expected a value, got \(describeNext())")
        }
    }

    private mutating func object(depth: Int, deferring: Bool = true) throws(JSONError) -> JSONValue {
        guard depth <= Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        position += 1
        var members: [(key: String, value: JSONValue)] = []
        skipWhitespace()
        if peek(UInt8(ascii: "}")) { return .object(members) }
        while true {
            skipWhitespace()
            guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                throw error("expected a member name in quotes, got \(describeNext())")
            }
            let key = try string()
            skipWhitespace()
            guard peek(UInt8(ascii: ":")) else { throw error("expected ':' after \"\(key)\", got \(describeNext())") }
            if deferring, self.deferring.contains(key) {
                skipWhitespace()
                let start = position
                try skipValue(depth: depth)
                members.append((key, .deferred(start..<position)))
            } else {
                members.append((key, try value(depth: depth)))
            }
            skipWhitespace()
            if peek(UInt8(ascii: ",")) { continue }
            if peek(UInt8(ascii: "}")) { return .object(members) }
            throw error("expected ',' or '}' in an object, got \(describeNext())")
        }
    }

    /// Checks one value's syntax without building it.
    private mutating func skipValue(depth: Int) throws(JSONError) {
        skipWhitespace()
        guard position < bytes.count else { throw error("unexpected end of the document") }
        switch bytes[position] {
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            let close = bytes[position] == UInt8(ascii: "[") ? UInt8(ascii: "]") : UInt8(ascii: "}")
            guard depth + 1 <= Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
            if close == UInt8(ascii: "}") {
                _ = try object(depth: depth + 1, deferring: false)
                return
            }
            position += 1
            skipWhitespace()
            if peek(close) { return }
            while true {
                try skipValue(depth: depth + 1)
                skipWhitespace()
                if peek(UInt8(ascii: ",")) { continue }
                if peek(close) { return }
                throw error("expected ',' or ']' in an array, got \(describeNext())")
            }
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try number()
        default: _ = try value(depth: depth)
        }
    }

    // MARK: Nested arrays

    /// Walks the nested arrays at `range` (a deferred value) in row-major order: `visitor` is
    /// told where each array starts and ends and gets each other element, built, with the index
    /// path that leads to it.
    public static func walkNested(
        _ bytes: UnsafeRawBufferPointer, _ range: Range<Int>, _ visitor: inout some NestedArrayVisitor
    ) throws {
        var reader = JSONReader(UnsafeRawBufferPointer(rebasing: bytes[..<range.upperBound]))
        reader.position = range.lowerBound
        var path: [Int] = []
        try reader.walk(&path, &visitor)
    }

    private mutating func walk(_ path: inout [Int], _ visitor: inout some NestedArrayVisitor) throws {
        skipWhitespace()
        guard peek(UInt8(ascii: "[")) else {
            try visitor.element(try value(depth: path.count), at: path)
            return
        }
        try visitor.enterArray(at: path)
        path.append(0)
        skipWhitespace()
        if !peek(UInt8(ascii: "]")) {
            while true {
                try walk(&path, &visitor)
                skipWhitespace()
                if peek(UInt8(ascii: "]")) { break }
                // The range was checked when it was deferred: only ',' can follow here.
                position += 1
                path[path.count - 1] += 1
            }
            path[path.count - 1] += 1
        }
        let count = path.removeLast()
        try visitor.exitArray(at: path, count: count)
    }

    // MARK: Tokens

    private mutating func string() throws(JSONError) -> String {
        let start = position
        position += 1
        var scan = position
        var ascii = true
        while scan < bytes.count {
            let byte = bytes[scan]
            if byte == UInt8(ascii: "\"") {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[position..<scan])
                // ASCII needs no validation, and String(validating:) is not specialized: slow.
                let text = ascii ? String(decoding: raw, as: UTF8.self) : String(validating: raw, as: UTF8.self)
                guard let text else { throw JSONError(message: "a string is not valid UTF-8", offset: start) }
                position = scan + 1
                return text
            }
            ascii = ascii && byte < 0x80
            if byte == UInt8(ascii: "\\") || byte < 0x20 { break }
            scan += 1
        }
        var utf8 = Array(bytes[position..<scan])
        position = scan
        while true {
            guard position < bytes.count else { throw JSONError(message: "a string does not end", offset: start) }
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                guard let text = String(validating: utf8, as: UTF8.self) else {
                    throw JSONError(message: "a string is not valid UTF-8", offset: start)
                }
                return text
            case UInt8(ascii: "\\"):
                try escape(into: &utf8)
            case 0..<0x20:
                throw JSONError(message: "a control character must be escaped in a string", offset: position - 1)
            default:
                utf8.append(byte)
            }
        }
    }

    private mutating func escape(into utf8: inout [UInt8]) throws(JSONError) {
        guard position < bytes.count else { throw error("a string does not end") }
        let byte = bytes[position]
        position += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(byte)
        case UInt8(ascii: "b"): utf8.append(0x08)
        case UInt8(ascii: "f"): utf8.append(0x0C)
        case UInt8(ascii: "n"): utf8.append(0x0A)
        case UInt8(ascii: "r"): utf8.append(0x0D)
        case UInt8(ascii: "t"): utf8.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try hex4()
            if (0xD800..<0xDC00).contains(scalar) {
                guard position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                    throw error("a \\u escape of a high surrogate must be followed by a low one")
                }
                position += 2
                let low = try hex4()
                guard (0xDC00..<0xE000).contains(low) else { throw error("\\u\(String(low, radix: 16)) is not a low surrogate") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(scalar) {
                throw error("a \\u escape of a low surrogate has no high one before it")
            }
            utf8.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
        default:
            throw JSONError(message: "unknown escape '\\\(Character(Unicode.Scalar(byte)))'", offset: position - 2)
        }
    }

    private mutating func hex4() throws(JSONError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw error("a \\u escape needs 4 hex digits") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error("a \\u escape needs 4 hex digits")
            }
            value = value << 4 | UInt32(digit)
            position += 1
        }
        return value
    }

    private mutating func number() throws(JSONError) -> JSONNumber {
        let start = position
        let negative = peek(UInt8(ascii: "-"))
        var integer: UInt64 = 0
        var overflow = false
        func digits(_ reader: inout JSONReader, accumulate: Bool) -> Int {
            var count = 0
            while reader.position < reader.bytes.count, case let byte = reader.bytes[reader.position],
                byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9")
            {
                if accumulate {
                    let (times10, o1) = integer.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
                    integer = sum
                    overflow = overflow || o1 || o2
                }
                reader.position += 1
                count += 1
            }
            return count
        }
        if peek(UInt8(ascii: "0")) {
            if position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
                throw error("a number must not start with 0")
            }
        } else if digits(&self, accumulate: true) == 0 {
            throw error("expected a digit, got \(describeNext())")
        }
        var exact = true
        if peek(UInt8(ascii: ".")) {
            exact = false
            guard digits(&self, accumulate: false) > 0 else { throw error("expected a digit after '.', got \(describeNext())") }
        }
        if position < bytes.count, bytes[position] | 0x20 == UInt8(ascii: "e") {
            exact = false
            position += 1
            if !peek(UInt8(ascii: "+")) { _ = peek(UInt8(ascii: "-")) }
            guard digits(&self, accumulate: false) > 0 else { throw error("expected a digit in the exponent, got \(describeNext())") }
        }
        if exact, !overflow {
            if !negative, integer > UInt64(Int64.max) { return .uint(integer) }
            if negative, integer <= UInt64(Int64.max) + 1 {
                return .int(integer == UInt64(Int64.max) + 1 ? .min : -Int64(integer))
            }
            if !negative { return .int(Int64(integer)) }
        }
        // Swift's parser is correctly rounded and locale-independent; the grammar was checked above.
        let literal = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        // RFC 8259 lets a reader limit the range; past a double's, a number would silently
        // become an infinity that JSON cannot even write back.
        guard let value = Double(literal), value.isFinite else {
            throw JSONError(message: "the number \(literal.prefix(32)) is out of range", offset: start)
        }
        return .double(value)
    }

    private mutating func literal(_ word: StaticString) throws(JSONError) {
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count,
            memcmpEqual(UnsafeRawBufferPointer(rebasing: bytes[position..<position + count]), word)
        else { throw error("expected a value, got \(describeNext())") }
        position += count
    }

    private func memcmpEqual(_ raw: UnsafeRawBufferPointer, _ word: StaticString) -> Bool {
        word.withUTF8Buffer { $0.elementsEqual(raw) }
    }

    // MARK: For the pull API (JSONReader+Pull.swift)

    var offset: Int { position }
    var currentByte: UInt8? { position < bytes.count ? bytes[position] : nil }
    func byte(at index: Int) -> UInt8? { index < bytes.count ? bytes[index] : nil }
    func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[range]) }
    mutating func moveTo(_ index: Int) { position = index }
    mutating func advance() { position += 1 }
    mutating func skipWhitespaceForPull() { skipWhitespace() }
    /// Consumes `byte` if it is next after whitespace.
    mutating func consume(_ byte: UInt8) -> Bool {
        skipWhitespace()
        return peek(byte)
    }
    mutating func enterNesting() throws(JSONError) {
        guard pullNesting < Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        pullNesting += 1
    }
    mutating func leaveNesting() { pullNesting -= 1 }
    mutating func valueForPull() throws(JSONError) -> JSONValue { try value(depth: pullNesting) }
    mutating func skipValueForPull() throws(JSONError) { try skipValue(depth: pullNesting) }
    mutating func stringForPull() throws(JSONError) -> String { try string() }
    func describeNextForPull() -> String { describeNext() }

    /// After the pull API has read the document's value: only whitespace may follow.
    public mutating func finish() throws(JSONError) {
        skipWhitespace()
        guard position == bytes.count else { throw error("unexpected \(describeNext()) after the document") }
    }

    // MARK: Helpers

    private mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case 0x20, 0x0A, 0x0D, 0x09: position += 1
            default: return
            }
        }
    }

    /// Consumes `byte` if it is next.
    private mutating func peek(_ byte: UInt8) -> Bool {
        guard position < bytes.count, bytes[position] == byte else { return false }
        position += 1
        return true
    }

    private func describeNext() -> String {
        guard position < bytes.count else { return "the end of the document" }
        let byte = bytes[position]
        return (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    private func error(_ message: String) -> JSONError {
        JSONError(message: message, offset: position)
    }
}

/// What ``JSONReader/walkNested(_:_:_:)`` reports while it walks nested arrays.
public protocol NestedArrayVisitor {
    mutating func enterArray(at path: [Int]) throws
    mutating func exitArray(at path: [Int], count: Int) throws
    mutating func element(_ value: JSONValue, at path: [Int]) throws
}

extension NestedArrayVisitor {
    public mutating func enterArray(at path: [Int]) throws {}
    public mutating func exitArray(at path: [Int], count: Int) throws {}
}

/// A parsed JSON value. Objects keep their members in document order (JSON bodies here are small
/// and looked up by a few known keys, so a list beats hashing), and numbers keep the exactness
/// their literal had: an integer literal stays an integer, as KServe's INT64/UINT64 data need.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object([(key: String, value: JSONValue)])
    /// A value the reader was told to defer (``JSONReader/parse(deferring:)``): its bytes, already
    /// checked to be well-formed JSON, for a typed decoder to read without building values.
    case deferred(Range<Int>)

    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.key == key }?.value
    }

    public var string: String? {
        if case .string(let value) = self { value } else { nil }
    }

    public var number: JSONNumber? {
        if case .number(let value) = self { value } else { nil }
    }

    public var bool: Bool? {
        if case .bool(let value) = self { value } else { nil }
    }

    public var array: [JSONValue]? {
        if case .array(let value) = self { value } else { nil }
    }

    public var members: [(key: String, value: JSONValue)]? {
        if case .object(let value) = self { value } else { nil }
    }

    /// What the value is, for error messages ("expected a number, got a string").
    public var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array, .deferred: "an array"
        case .object: "an object"
        }
    }

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.number(let a), .number(let b)): a == b
        case (.string(let a), .string(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.object(let a), .object(let b)): a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.deferred(let a), .deferred(let b)): a == b
        default: false
        }
    }
}

/// A JSON number as its literal allows: exact integers when it had no fraction or exponent and
/// fits 64 bits, otherwise the nearest double.
public enum JSONNumber: Sendable, Equatable {
    case int(Int64)
    /// Only for integers above Int64.max.
    case uint(UInt64)
    case double(Double)

    public var double: Double {
        switch self {
        case .int(let value): Double(value)
        case .uint(let value): Double(value)
        case .double(let value): value
        }
    }

    /// The value as an exact integer, if it is one (2.0 is; 2.5 and 1e30 are not).
    public var int64: Int64? {
        switch self {
        case .int(let value): value
        case .uint: nil
        case .double(let value): Int64(exactly: value)
        }
    }

    public var uint64: UInt64? {
        switch self {
        case .int(let value): UInt64(exactly: value)
        case .uint(let value): value
        case .double(let value): UInt64(exactly: value)
        }
    }
}

extension JSONValue {
    /// A value as an error message quotes it: short scalars in full (strings cut at 40
    /// characters), containers by kind, a missing member as "nothing".
    public static func describe(_ value: JSONValue?) -> String {
        switch value {
        case nil: "nothing"
        case .string(let text)?: text.count > 40 ? "\"\(text.prefix(40))...\"" : "\"\(text)\""
        case .number(let number)?: number.int64.map(String.init) ?? String(number.double)
        case .bool(let flag)?: String(flag)
        case let other?: other.kind
        }
    }

    /// The first member name that appears twice, if any: a document that says a field twice is
    /// refused rather than one of its values silently winning.
    public var duplicateKey: String? {
        guard case .object(let members) = self, members.count > 1 else { return nil }
        var seen = Set<String>()
        for member in members where !seen.insert(member.key).inserted { return member.key }
        return nil
    }
}

// Literals, so that documents built in code read like the JSON they write.
extension JSONValue: ExpressibleByDictionaryLiteral, ExpressibleByArrayLiteral, ExpressibleByStringLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral, ExpressibleByFloatLiteral
{
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(elements.map { (key: $0.0, value: $0.1) }) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .number(.int(value)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(floatLiteral value: Double) { self = .number(.double(value)) }

    public static func int<Integer: BinaryInteger>(_ value: Integer) -> JSONValue {
        if let exact = Int64(exactly: value) { return .number(.int(exact)) }
        return .number(.uint(UInt64(clamping: value)))
    }

    public static func double(_ value: Double) -> JSONValue { .number(.double(value)) }

    /// The same value with every object's members in key order, for output people diff.
    public func sortingKeys() -> JSONValue {
        switch self {
        case .array(let elements): .array(elements.map { $0.sortingKeys() })
        case .object(let members): .object(members.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value.sortingKeys()) })
        default: self
        }
    }
}

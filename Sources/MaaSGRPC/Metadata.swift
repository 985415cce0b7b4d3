import FoundationEssentials

/// gRPC custom metadata: an ordered multi-map of lower-case keys to values. Keys ending in
/// `-bin` hold binary values, sent base64-encoded on the wire; all others hold ASCII strings.
public struct Metadata: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral {
    public enum Value: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
        case string(String)
        case binary([UInt8])

        public init(stringLiteral value: String) {
            self = .string(value)
        }

        public var description: String {
            switch self {
            case .string(let string): string
            case .binary(let bytes): "<\(bytes.count) bytes>"
            }
        }
    }

    public struct Element: Sendable, Hashable {
        public var key: String
        public var value: Value
    }

    private var elements: [Element] = []

    public init() {}

    public init(dictionaryLiteral elements: (String, Value)...) {
        for (key, value) in elements { add(key, value: value) }
    }

    public var isEmpty: Bool { elements.isEmpty }
    public var count: Int { elements.count }

    public func makeIterator() -> IndexingIterator<[Element]> { elements.makeIterator() }

    /// Adds a string value. `key` is lower-cased.
    public mutating func add(_ key: String, _ value: String) {
        elements.append(Element(key: key.lowercased(), value: .string(value)))
    }

    /// Adds a binary value; `key` must end in `-bin`.
    public mutating func add(_ key: String, binary value: [UInt8]) {
        precondition(key.lowercased().hasSuffix("-bin"), "binary metadata keys end in -bin")
        elements.append(Element(key: key.lowercased(), value: .binary(value)))
    }

    public mutating func add(_ key: String, value: Value) {
        elements.append(Element(key: key.lowercased(), value: value))
    }

    /// The first string value for `key`, if any.
    public subscript(key: String) -> String? {
        let key = key.lowercased()
        for element in elements where element.key == key {
            if case .string(let value) = element.value { return value }
        }
        return nil
    }

    /// The first binary value for `key` (which ends in `-bin`), if any.
    public func binary(_ key: String) -> [UInt8]? {
        let key = key.lowercased()
        for element in elements where element.key == key {
            if case .binary(let value) = element.value { return value }
        }
        return nil
    }

    /// All values for `key`, in order.
    public func values(_ key: String) -> [Value] {
        let key = key.lowercased()
        return elements.filter { $0.key == key }.map(\.value)
    }
}

extension Metadata {
    /// Headers that belong to the protocol and never appear as custom metadata.
    static func isReserved(_ name: String) -> Bool {
        if name.hasPrefix(":") { return true }
        switch name {
        case "content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
            "grpc-status", "grpc-message", "content-length":
            return true
        default:
            return false
        }
    }

    /// Decodes one received header into metadata. Returns false for a `-bin` value that is not
    /// valid base64.
    mutating func addWireHeader(name: String, value: String) -> Bool {
        if name.hasSuffix("-bin") {
            // gRPC allows unpadded base64 and several comma-separated values.
            for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                var text = String(part.filter { $0 != " " && $0 != "\t" })
                let remainder = text.utf8.count % 4
                if remainder != 0 { text += String(repeating: "=", count: 4 - remainder) }
                guard let data = Data(base64Encoded: text) else { return false }
                elements.append(Element(key: name, value: .binary(Array(data))))
            }
            return true
        }
        elements.append(Element(key: name, value: .string(value)))
        return true
    }

    /// The wire form of every element: `-bin` values base64-encoded without padding.
    var wireHeaders: [(name: String, value: String)] {
        elements.map { element in
            switch element.value {
            case .string(let string):
                return (element.key, string)
            case .binary(let bytes):
                var encoded = Data(bytes).base64EncodedString()
                while encoded.hasSuffix("=") { encoded.removeLast() }
                return (element.key, encoded)
            }
        }
    }
}

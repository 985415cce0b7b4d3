/// Writes JSON straight into bytes, members in the order given. Commas are placed by the writer:
/// every value after the first in an array or object gets one. With an indent, each member and
/// element goes on its own line (files people read and edit); without, nothing is added.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []
    private var needsComma = false
    private let indent: Int
    private var depth = 0
    /// A value right after its key stays on the key's line.
    private var afterKey = false

    public init(capacity: Int = 256, indent: Int = 0) {
        bytes.reserveCapacity(capacity)
        self.indent = indent
    }

    public mutating func beginObject() { open(UInt8(ascii: "{")) }
    public mutating func endObject() { close(UInt8(ascii: "}")) }
    public mutating func beginArray() { open(UInt8(ascii: "[")) }
    public mutating func endArray() { close(UInt8(ascii: "]")) }

    /// A member's name; its value follows.
    public mutating func key(_ name: String) {
        separate()
        quoted(name)
        bytes.append(UInt8(ascii: ":"))
        if indent > 0 { bytes.append(UInt8(ascii: " ")) }
        needsComma = false
        afterKey = true
    }

    public mutating func string(_ value: String) {
        separate()
        quoted(value)
        needsComma = true
    }

    public mutating func bool(_ value: Bool) {
        raw(value ? "true" : "false")
    }

    public mutating func null() { raw("null") }

    public mutating func int(_ value: Int64) {
        separate()
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        digits(value.magnitude)
        needsComma = true
    }

    public mutating func int(_ value: UInt64) {
        separate()
        digits(value)
        needsComma = true
    }

    public mutating func int(_ value: Int) { int(Int64(value)) }
    public mutating func int(_ value: Int32) { int(Int64(value)) }
    public mutating func int(_ value: Int16) { int(Int64(value)) }
    public mutating func int(_ value: Int8) { int(Int64(value)) }
    public mutating func int(_ value: UInt32) { int(UInt64(value)) }
    public mutating func int(_ value: UInt16) { int(UInt64(value)) }
    public mutating func int(_ value: UInt8) { int(UInt64(value)) }

    /// The shortest digits that read back as the same Float. NaN and the infinities have no JSON
    /// form: they are written `NaN`, `Infinity`, `-Infinity`, as Python's json (tritonclient)
    /// reads them.
    public mutating func float(_ value: Float) {
        guard value.isFinite else { return nonFinite(Double(value)) }
        separate()
        bytes.append(contentsOf: value.description.utf8)
        needsComma = true
    }

    public mutating func double(_ value: Double) {
        guard value.isFinite else { return nonFinite(value) }
        separate()
        bytes.append(contentsOf: value.description.utf8)
        needsComma = true
    }

    public mutating func value(_ value: JSONValue) {
        switch value {
        case .null: null()
        case .bool(let flag): bool(flag)
        case .number(.int(let number)): int(number)
        case .number(.uint(let number)): int(number)
        case .number(.double(let number)): double(number)
        case .string(let text): string(text)
        case .array(let elements):
            beginArray()
            for element in elements { self.value(element) }
            endArray()
        case .object(let members):
            beginObject()
            for (name, member) in members {
                key(name)
                self.value(member)
            }
            endObject()
        case .deferred:
            preconditionFailure("a deferred value has no bytes of its own to write")
        }
    }

    /// Bytes already known to be one JSON value.
    public mutating func raw(_ text: String) {
        separate()
        bytes.append(contentsOf: text.utf8)
        needsComma = true
    }

    // MARK: Private

    private mutating func open(_ byte: UInt8) {
        separate()
        bytes.append(byte)
        depth += 1
        needsComma = false
    }

    private mutating func close(_ byte: UInt8) {
        depth -= 1
        // needsComma is still set when the container had an element: empty ones stay "{}".
        if indent > 0 && needsComma { newline() }
        bytes.append(byte)
        needsComma = true
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        if afterKey {
            afterKey = false
        } else if indent > 0 && depth > 0 {
            newline()
        }
    }

    private mutating func newline() {
        bytes.append(0x0A)
        bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: depth * indent))
    }

    private mutating func nonFinite(_ value: Double) {
        raw(value.isNaN ? "NaN" : value < 0 ? "-Infinity" : "Infinity")
    }

    private mutating func digits(_ value: UInt64) {
        // At most 20 digits, written backwards into a fixed buffer, then appended at once.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buffer in
            var remaining = value
            var start = 20
            repeat {
                start -= 1
                buffer[start] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
            } while remaining > 0
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[start..<20]))
        }
    }

    private mutating func quoted(_ text: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else {
                bytes.append(byte)
                continue
            }
            bytes.append(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(byte)
            case 0x0A: bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "t"))
            default:
                bytes.append(contentsOf: "u00".utf8)
                for nibble in [byte >> 4, byte & 0xF] {
                    bytes.append(nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10)
                }
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

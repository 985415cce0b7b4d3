/// Why a tokenizer.json could not be used: names the field and what was found in it.
public struct TokenizerError: Error, Sendable, CustomStringConvertible {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

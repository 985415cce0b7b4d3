import Glibc

/// The SHA-256 of a token, as four words so that comparing two costs four XORs.
public struct TokenDigest: Sendable, Hashable {
    let words: (UInt64, UInt64, UInt64, UInt64)

    /// From 32 bytes.
    init(bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == 32, "a SHA-256 digest has 32 bytes, got \(bytes.count)")
        var words = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: bytes) }
        self.words = words
    }

    /// From 64 lower-case hex digits; nil for anything else.
    init?(hex: Substring) {
        let utf8 = hex.utf8
        guard utf8.count == 64 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        var index = 0
        var high: UInt8?
        for byte in utf8 {
            let nibble: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            if let first = high {
                bytes[index] = first << 4 | nibble
                index += 1
                high = nil
            } else {
                high = nibble
            }
        }
        self = bytes.withUnsafeBytes { TokenDigest(bytes: $0) }
    }

    /// Zero when the digests are equal. Every word is looked at whatever the others hold, so
    /// the time taken does not depend on where two digests differ.
    @inline(__always)
    func difference(_ other: TokenDigest) -> UInt64 {
        (words.0 ^ other.words.0) | (words.1 ^ other.words.1) | (words.2 ^ other.words.2) | (words.3 ^ other.words.3)
    }

    public static func == (a: TokenDigest, b: TokenDigest) -> Bool { a.difference(b) == 0 }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }
}

/// One line of a token file: the token's digest, a name for logs and metrics, its scopes.
public struct TokenEntry: Sendable, Hashable {
    public var digest: TokenDigest
    public var name: String
    public var scopes: Set<Scope>
    /// Where it was read (1-based), 0 when built in code.
    public var line: Int

    public init(digest: TokenDigest, name: String, scopes: Set<Scope>, line: Int = 0) {
        self.digest = digest
        self.name = name
        self.scopes = scopes
        self.line = line
    }
}

/// A token file that cannot be used: which line and why. Never quotes the first field of a
/// line, which might be a token written in clear by mistake.
public struct TokenFileError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file, when read from one.
    public var path: String?
    /// 1-based; 0 when the file as a whole is the problem (missing, too large, not UTF-8).
    public var line: Int
    public var message: String

    public init(path: String? = nil, line: Int, _ message: String) {
        self.path = path
        self.line = line
        self.message = message
    }

    public var description: String {
        let place = line > 0 ? "line \(line): " : ""
        return path.map { "\($0): \(place)\(message)" } ?? "\(place)\(message)"
    }
}

/// `--auth-tokens FILE`: one token per line, `SHA256HEX NAME SCOPES`.
///
/// - `SHA256HEX`: the token's SHA-256 as 64 lower-case hex digits (`printf %s "$TOKEN" | sha256sum`);
///   the file holds no secret.
/// - `NAME`: 1 to 64 of `A-Z a-z 0-9 . _ -`, unique in the file; it names the token in logs
///   and in `maas_token_requests_total{token="NAME"}`.
/// - `SCOPES`: a comma-separated list of `infer`, `read`, `admin`, each at most once.
///
/// Fields are separated by spaces or tabs; `#` starts a comment (a whole line or the rest of
/// one); blank lines are skipped. Two lines with the same digest or the same name are refused.
public enum TokenFile {
    /// Largest file accepted; at most one byte more is read to tell.
    public static let maxBytes = 1 << 20
    static let maxNameLength = 64

    /// Reads and parses the file at `path`.
    public static func read(path: String) throws(TokenFileError) -> [TokenEntry] {
        guard let bytes = readPrefix(path: path, count: maxBytes + 1) else {
            throw TokenFileError(path: path, line: 0, "cannot read the token file")
        }
        guard bytes.count <= maxBytes else {
            throw TokenFileError(path: path, line: 0, "the token file is larger than the limit of \(maxBytes) bytes")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw TokenFileError(path: path, line: 0, "the token file is not UTF-8 text")
        }
        do {
            return try parse(text)
        } catch {
            throw TokenFileError(path: path, line: error.line, error.message)
        }
    }

    /// Parses a token file's text.
    public static func parse(_ text: String) throws(TokenFileError) -> [TokenEntry] {
        var entries: [TokenEntry] = []
        var lineOfDigest: [TokenDigest: Int] = [:]
        var lineOfName: [String: Int] = [:]
        var number = 0
        // "\r\n" is one Character: name it, or CRLF files would read as one line.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            number += 1
            var line = rawLine
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            guard fields.count == 3 else {
                throw TokenFileError(line: number, "expected 'SHA256HEX NAME SCOPES', got \(fields.count) field\(fields.count == 1 ? "" : "s")")
            }
            let digest = try parseDigest(fields[0], line: number)
            let name = try parseName(fields[1], line: number)
            let scopes = try parseScopes(fields[2], line: number)
            if let first = lineOfDigest[digest] {
                throw TokenFileError(line: number, "the same token digest is already on line \(first): each token has one line")
            }
            if let first = lineOfName[name] {
                throw TokenFileError(line: number, "the name '\(name)' is already used on line \(first)")
            }
            lineOfDigest[digest] = number
            lineOfName[name] = number
            entries.append(TokenEntry(digest: digest, name: name, scopes: scopes, line: number))
        }
        return entries
    }

    private static func parseDigest(_ field: Substring, line: Int) throws(TokenFileError) -> TokenDigest {
        if let digest = TokenDigest(hex: field) { return digest }
        let isHex = field.utf8.allSatisfy { byte in
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
        }
        if isHex, field.utf8.count == 64 {
            throw TokenFileError(line: line, "the SHA-256 digest must be lower-case hex")
        }
        if isHex {
            throw TokenFileError(line: line, "the SHA-256 digest must have 64 hex digits, got \(field.utf8.count)")
        }
        // Not hex at all: perhaps a token in clear. Say so without quoting it.
        throw TokenFileError(
            line: line,
            "the first field is not a SHA-256 hex digest (the file holds digests, never tokens: printf %s \"$TOKEN\" | sha256sum)")
    }

    private static func parseName(_ field: Substring, line: Int) throws(TokenFileError) -> String {
        guard field.utf8.count <= maxNameLength else {
            throw TokenFileError(line: line, "a token name has at most \(maxNameLength) characters, got \(field.utf8.count)")
        }
        let allowed = field.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                true
            default:
                false
            }
        }
        guard allowed else {
            throw TokenFileError(line: line, "a token name takes only letters, digits, '.', '_' and '-'")
        }
        return String(field)
    }

    private static func parseScopes(_ field: Substring, line: Int) throws(TokenFileError) -> Set<Scope> {
        var scopes: Set<Scope> = []
        for item in field.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else {
                throw TokenFileError(line: line, "empty scope in '\(field)': scopes are separated by single commas")
            }
            guard let scope = Scope(rawValue: String(item)) else {
                let known = Scope.allCases.map(\.rawValue).joined(separator: ", ")
                throw TokenFileError(line: line, "unknown scope '\(item)': the scopes are \(known)")
            }
            guard scopes.insert(scope).inserted else {
                throw TokenFileError(line: line, "scope '\(item)' is listed twice")
            }
        }
        return scopes
    }
}

/// At most `count` bytes from the start of the file: one byte past a limit tells a file that is
/// too large without reading all of it.
private func readPrefix(path: String, count: Int) -> [UInt8]? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var bytes = [UInt8](repeating: 0, count: count)
    var filled = 0
    while filled < count {
        let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + filled, count - filled) }
        if got < 0 && errno == EINTR { continue }
        guard got >= 0 else { return nil }
        if got == 0 { break }
        filled += got
    }
    return Array(bytes.prefix(filled))
}

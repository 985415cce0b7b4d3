public import CoreMetrics
import Crypto
public import Logging
public import MaaSCore
import Synchronization
import UnixSignals

/// Why a call was not authenticated. The messages never quote what the client sent.
public enum AuthenticationFailure: Error, Sendable, Hashable {
    /// No `authorization` header (or metadata).
    case missing
    /// More than one `authorization` value.
    case repeated
    /// A scheme other than `Bearer` (`Basic`, or a bare token).
    case wrongScheme
    /// `Bearer` with nothing after it.
    case empty
    /// `Bearer` followed by something that is not one RFC 6750 token (spaces, control bytes…).
    case malformed
    /// A well-formed token whose digest is not in the file.
    case unknown

    public var message: String {
        switch self {
        case .missing: "no credentials: send 'authorization: Bearer TOKEN'"
        case .repeated: "more than one authorization header: send exactly one 'authorization: Bearer TOKEN'"
        case .wrongScheme: "the authorization header must use the Bearer scheme: 'authorization: Bearer TOKEN'"
        case .empty: "empty bearer token"
        case .malformed: "malformed bearer token: one token of letters, digits and -._~+/ (then '=' padding) follows 'Bearer '"
        case .unknown: "unknown bearer token"
        }
    }

    /// Whether the client presented a token at all (RFC 6750 §3.1: no `error` attribute then).
    var presentedToken: Bool {
        switch self {
        case .missing, .wrongScheme: false
        case .repeated, .empty, .malformed, .unknown: true
        }
    }
}

/// What the check decided.
public enum AccessDecision: Sendable, Hashable {
    /// Serve it; `token` names the token that allowed it (nil: the route is open).
    case allowed(token: String?)
    /// UNAUTHENTICATED / 401.
    case unauthenticated(AuthenticationFailure)
    /// PERMISSION_DENIED / 403: a known token without the scope.
    case forbidden(token: String, scope: Scope)

    public var isAllowed: Bool {
        if case .allowed = self { true } else { false }
    }

    /// The status and the message a client gets when the call is refused.
    public var refusal: (code: StatusCode, message: String)? {
        switch self {
        case .allowed: nil
        case .unauthenticated(let failure): (.unauthenticated, failure.message)
        case .forbidden(let token, let scope): (.permissionDenied, "token '\(token)' lacks the '\(scope)' scope this call needs")
        }
    }
}

/// The tokens of `--auth-tokens FILE`, checked on `authorization: Bearer TOKEN`.
///
/// The presented token is hashed with SHA-256 and its digest compared with every stored digest,
/// each comparison over all 32 bytes and none stopping early, so the time taken tells neither
/// which entry matched nor how many leading bytes did. Comparing digests rather than tokens also
/// makes the token's length moot: every comparison is 32 bytes, whatever was sent.
///
/// ```swift
/// let tokens = try TokenStore(path: "/etc/maas/tokens")
/// tokens.authenticate("Bearer s3cr3t")   // .success(entry) or .failure(.unknown)
/// tokens.reload(logger: logger)         // on SIGHUP: a bad file keeps the old tokens
/// ```
///
/// - Important: nothing here logs or returns the token; errors name the token by its name.
public final class TokenStore: Sendable {
    /// One generation of tokens, with their counters created once.
    final class Table: Sendable {
        let entries: [TokenEntry]
        let allowed: [Counter]
        let forbidden: [Counter]

        init(_ entries: [TokenEntry], factory: any MetricsFactory) {
            self.entries = entries
            allowed = entries.map { Counter(label: TokenStore.metricName, dimensions: [("token", $0.name), ("result", "allowed")], factory: factory) }
            forbidden = entries.map { Counter(label: TokenStore.metricName, dimensions: [("token", $0.name), ("result", "forbidden")], factory: factory) }
        }
    }

    /// `maas_token_requests_total{token, result}`: requests checked, by token name (never the
    /// token) and outcome (`allowed`, `forbidden`; `unauthenticated` with `token=""`).
    public static let metricName = "maas_token_requests_total"
    public static let metricHelp = "Requests checked against --auth-tokens, by token name and result (allowed, forbidden, unauthenticated)."

    /// The file the tokens come from; nil when built from entries.
    public let path: String?
    private let table: Mutex<Table>
    private let factory: any MetricsFactory
    private let unauthenticatedCounter: Counter

    /// Reads `path`.
    /// - Parameters:
    ///   - factory: where the per-token counters go (the bootstrapped backend by default, so
    ///     make the store after the bootstrap).
    /// - Throws: ``TokenFileError`` naming the line that is wrong.
    public convenience init(path: String, factory: any MetricsFactory = MetricsSystem.factory) throws(TokenFileError) {
        self.init(path: path, entries: try TokenFile.read(path: path), factory: factory)
    }

    /// Tokens given in code (tests); ``reload()`` does nothing.
    public convenience init(entries: [TokenEntry], factory: any MetricsFactory = MetricsSystem.factory) {
        self.init(path: nil, entries: entries, factory: factory)
    }

    private init(path: String?, entries: [TokenEntry], factory: any MetricsFactory) {
        self.path = path
        self.factory = factory
        table = Mutex(Table(entries, factory: factory))
        unauthenticatedCounter = Counter(label: TokenStore.metricName, dimensions: [("token", ""), ("result", "unauthenticated")], factory: factory)
    }

    /// The entries in force.
    public var entries: [TokenEntry] { current.entries }

    private var current: Table { table.withLock { $0 } }

    /// Re-reads the file. On success the new tokens take effect for every call checked from
    /// now on; on failure the old ones stay.
    /// - Throws: ``TokenFileError`` naming the line that is wrong.
    public func reload() throws(TokenFileError) {
        guard let path else { return }
        let fresh = Table(try TokenFile.read(path: path), factory: factory)
        table.withLock { $0 = fresh }
    }

    /// ``reload()`` for a SIGHUP handler: logs what happened (names and line numbers only).
    /// - Returns: whether the new file took effect.
    @discardableResult
    public func reload(logger: Logger) -> Bool {
        do {
            try reload()
            logger.notice("token file reloaded", metadata: ["tokens": "\(entries.count)", "names": "\(entries.map(\.name).joined(separator: ","))"])
            return true
        } catch {
            logger.error("token file not reloaded; the previous tokens stay in force", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Checks one `authorization` value (nil: none was sent) against the store.
    public func authenticate(_ authorization: String?) -> Result<TokenEntry, AuthenticationFailure> {
        let table = current
        switch match(authorization, in: table) {
        case .success(let index): return .success(table.entries[index])
        case .failure(let failure): return .failure(failure)
        }
    }

    /// Authenticates and checks `scope` (nil: any known token), counting the request.
    /// - Parameters:
    ///   - authorization: the first `authorization` value, nil when there is none.
    ///   - count: how many `authorization` values the request carried.
    public func check(_ authorization: String?, count: Int = 1, scope: Scope?) -> AccessDecision {
        let table = current
        let found: Result<Int, AuthenticationFailure> = count > 1 ? .failure(.repeated) : match(authorization, in: table)
        switch found {
        case .failure(let failure):
            unauthenticatedCounter.increment()
            return .unauthenticated(failure)
        case .success(let index):
            let entry = table.entries[index]
            if let scope, !entry.scopes.contains(scope) {
                table.forbidden[index].increment()
                return .forbidden(token: entry.name, scope: scope)
            }
            table.allowed[index].increment()
            return .allowed(token: entry.name)
        }
    }

    private func match(_ authorization: String?, in table: Table) -> Result<Int, AuthenticationFailure> {
        guard let authorization else { return .failure(.missing) }
        let token: Substring
        switch Self.bearerToken(authorization) {
        case .success(let value): token = value
        case .failure(let failure): return .failure(failure)
        }
        let digest = Self.digest(of: token)
        // Every entry, every word: no early exit. `found` ends as the matching index + 1, or 0.
        var found: UInt64 = 0
        for (index, entry) in table.entries.enumerated() {
            let difference = entry.digest.difference(digest)
            // 1 when difference is zero, 0 otherwise, without a branch.
            let equal = ((difference | (0 &- difference)) >> 63) ^ 1
            found |= (0 &- equal) & UInt64(index + 1)
        }
        return found == 0 ? .failure(.unknown) : .success(Int(found) - 1)
    }

    /// The token of `Bearer TOKEN` (scheme case-insensitive, RFC 7235; one or more spaces, then
    /// an RFC 6750 `b64token`). Anything after the token, whitespace included, makes it malformed.
    static func bearerToken(_ value: String) -> Result<Substring, AuthenticationFailure> {
        let utf8 = value.utf8
        let scheme = utf8.prefix { $0 != UInt8(ascii: " ") }
        guard scheme.count == 6, scheme.elementsEqual("bearer".utf8, by: { $0 | 0x20 == $1 }) else {
            return .failure(.wrongScheme)
        }
        let rest = utf8.dropFirst(6).drop { $0 == UInt8(ascii: " ") }
        guard !rest.isEmpty else { return .failure(.empty) }
        var padding = false
        for byte in rest {
            switch byte {
            case UInt8(ascii: "="):
                padding = true
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                if padding { return .failure(.malformed) }
            default:
                return .failure(.malformed)
            }
        }
        if rest.first == UInt8(ascii: "=") { return .failure(.malformed) }
        return .success(Substring(rest))
    }

    /// SHA-256 of the token's bytes.
    static func digest(of token: Substring) -> TokenDigest {
        var hasher = SHA256()
        var token = token
        token.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        return hasher.finalize().withUnsafeBytes { TokenDigest(bytes: $0) }
    }

    /// The line a token file holds for `token`: its SHA-256 in lower-case hex (what
    /// `printf %s "$TOKEN" | sha256sum` prints).
    public static func hexDigest(of token: String) -> String {
        var hasher = SHA256()
        var token = token
        token.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
        return hasher.finalize().map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}

extension TokenStore {
    /// Reads the tokens at `path` (throwing, with the line, when the file is bad) and re-reads
    /// them on every SIGHUP until the returned task is cancelled; a bad new file is logged and
    /// the tokens before it stay. For the executables, which own the process's signals.
    public static func reloadingOnHangup(path: String, logger: Logger) async throws -> (TokenStore, Task<Void, Never>) {
        let tokens = try TokenStore(path: path)
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let task = Task {
            for await _ in hangups { _ = tokens.reload(logger: logger) }
        }
        return (tokens, task)
    }
}

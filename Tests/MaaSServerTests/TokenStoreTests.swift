import CoreMetrics
import Foundation
import MaaSCore
import Prometheus
import Testing

@testable import MaaSServer

/// `--auth-tokens` files and the bearer check: the parser's refusals with their line numbers,
/// the `Bearer` syntax, scopes, reloads and the per-token counters.
@Suite("Token store")
struct TokenStoreTests {
    static let reader = "r3ader-token"
    static let runner = "runner.token_with~odd+chars/="
    static let admin = "admin-token"

    /// The helper is checked against published SHA-256 vectors (`digestVectors`), so the
    /// files below are what `printf %s TOKEN | sha256sum` gives.
    static func file(_ lines: [String]) -> String { lines.joined(separator: "\n") + "\n" }

    static var goodFile: String {
        file([
            "# tokens for the test server",
            "",
            "\(TokenStore.hexDigest(of: reader)) reader read",
            "\(TokenStore.hexDigest(of: runner))\tci-runner   infer,read   # trailing comment",
            "\(TokenStore.hexDigest(of: admin)) ops admin,read,infer\r",
        ])
    }

    @Test("SHA-256 hex matches the published test vectors (the file's digests are sha256sum's)")
    func digestVectors() {
        #expect(TokenStore.hexDigest(of: "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(TokenStore.hexDigest(of: "") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test("a good file: comments, blank lines, tabs, CRLF, scopes in any order")
    func goodFile() throws {
        let entries = try TokenFile.parse(Self.goodFile)
        #expect(entries.map(\.name) == ["reader", "ci-runner", "ops"])
        #expect(entries.map(\.line) == [3, 4, 5])
        #expect(entries[0].scopes == [.read])
        #expect(entries[1].scopes == [.infer, .read])
        #expect(entries[2].scopes == Set(Scope.allCases))
    }

    static let hex = String(repeating: "ab", count: 32)

    @Test("bad lines are refused with their line number", arguments: [
        ("\(TokenStoreTests.hex) only-two", 1, "expected 'SHA256HEX NAME SCOPES', got 2 fields"),
        ("# ok\n\(TokenStoreTests.hex) a infer extra", 2, "got 4 fields"),
        ("\(TokenStoreTests.hex.uppercased()) a infer", 1, "lower-case hex"),
        ("\(TokenStoreTests.hex.dropLast()) a infer", 1, "64 hex digits, got 63"),
        ("\(TokenStoreTests.hex)00 a infer", 1, "64 hex digits, got 66"),
        ("my-secret-token a infer", 1, "not a SHA-256 hex digest"),
        ("\n\n\(TokenStoreTests.hex) a write", 3, "unknown scope 'write': the scopes are infer, read, admin"),
        ("\(TokenStoreTests.hex) a Infer", 1, "unknown scope 'Infer'"),
        ("\(TokenStoreTests.hex) a infer,", 1, "empty scope"),
        ("\(TokenStoreTests.hex) a infer,,read", 1, "empty scope"),
        ("\(TokenStoreTests.hex) a infer,infer", 1, "scope 'infer' is listed twice"),
        ("\(TokenStoreTests.hex) bad/name infer", 1, "a token name takes only letters"),
        ("\(TokenStoreTests.hex) \(String(repeating: "n", count: 65)) infer", 1, "at most 64 characters"),
    ])
    func badLine(text: String, line: Int, message: String) {
        #expect {
            _ = try TokenFile.parse(text)
        } throws: { error in
            guard let error = error as? TokenFileError else { return false }
            return error.line == line && error.message.contains(message)
        }
    }

    @Test("a token written in clear by mistake is not quoted in the error")
    func clearTokenNotQuoted() {
        do {
            _ = try TokenFile.parse("hunter2-clear-token reader read\n")
            Issue.record("parsed a line whose first field is not a digest")
        } catch {
            #expect(error.line == 1)
            #expect(!error.description.contains("hunter2"))
        }
    }

    @Test("duplicate digests and duplicate names name both lines")
    func duplicates() {
        let a = TokenStore.hexDigest(of: "a"), b = TokenStore.hexDigest(of: "b")
        #expect(throws: TokenFileError(line: 3, "the same token digest is already on line 1: each token has one line")) {
            try TokenFile.parse("\(a) one infer\n\(b) two infer\n\(a) three read\n")
        }
        #expect(throws: TokenFileError(line: 2, "the name 'one' is already used on line 1")) {
            try TokenFile.parse("\(a) one infer\n\(b) one read\n")
        }
    }

    @Test("an empty file is valid and refuses everyone")
    func emptyFile() throws {
        let store = TokenStore(entries: try TokenFile.parse("# nobody yet\n"))
        #expect(store.check("Bearer \(Self.reader)", scope: .read) == .unauthenticated(.unknown))
    }

    @Test("Bearer syntax", arguments: [
        (String?.none, AuthenticationFailure.missing),
        ("Basic dXNlcjpwYXNz", .wrongScheme),
        (TokenStoreTests.reader, .wrongScheme),  // a bare token, no scheme
        ("Bearer", .empty),
        ("Bearer ", .empty),
        ("Bearer    ", .empty),
        ("Bearer \(TokenStoreTests.reader) ", .malformed),  // trailing whitespace is not trimmed
        ("Bearer \(TokenStoreTests.reader)\t", .malformed),
        ("Bearer \(TokenStoreTests.reader) extra", .malformed),
        ("Bearer \(TokenStoreTests.reader)==x", .malformed),
        ("Bearer =abc", .malformed),
        ("Bearer tok\u{0}en", .malformed),
        ("Bearer\t\(TokenStoreTests.reader)", .wrongScheme),
        ("Bearer not-a-known-token", .unknown),
    ])
    func bearerFailures(header: String?, failure: AuthenticationFailure) throws {
        let store = TokenStore(entries: try TokenFile.parse(Self.goodFile))
        #expect(store.check(header, scope: nil) == .unauthenticated(failure))
    }

    @Test("scheme case-insensitive, several spaces allowed, = padding and RFC 6750 characters kept")
    func bearerAccepted() throws {
        let store = TokenStore(entries: try TokenFile.parse(Self.goodFile))
        #expect(store.check("bearer \(Self.reader)", scope: .read) == .allowed(token: "reader"))
        #expect(store.check("BEARER   \(Self.reader)", scope: .read) == .allowed(token: "reader"))
        #expect(store.check("Bearer \(Self.runner)", scope: .infer) == .allowed(token: "ci-runner"))
        // A token that only differs in its last byte, or is a prefix, is unknown.
        #expect(store.check("Bearer r3ader-tokeN", scope: .read) == .unauthenticated(.unknown))
        #expect(store.check("Bearer r3ader-toke", scope: .read) == .unauthenticated(.unknown))
    }

    @Test("scopes: a token without the scope is forbidden, naming it; several headers are refused")
    func scopes() throws {
        let store = TokenStore(entries: try TokenFile.parse(Self.goodFile))
        let reader = "Bearer \(Self.reader)", runner = "Bearer \(Self.runner)", admin = "Bearer \(Self.admin)"
        #expect(store.check(reader, scope: .infer) == .forbidden(token: "reader", scope: .infer))
        #expect(store.check(reader, scope: .admin) == .forbidden(token: "reader", scope: .admin))
        #expect(store.check(runner, scope: .admin) == .forbidden(token: "ci-runner", scope: .admin))
        #expect(store.check(admin, scope: .admin) == .allowed(token: "ops"))
        #expect(store.check(reader, scope: nil) == .allowed(token: "reader"))
        #expect(store.check(reader, count: 2, scope: .read) == .unauthenticated(.repeated))
        let refusal = try #require(store.check(reader, scope: .infer).refusal)
        #expect(refusal.code == .permissionDenied)
        #expect(refusal.message.contains("'infer'"))
    }

    @Test("the right entry is found among many, wherever it is")
    func manyEntries() throws {
        let tokens = (0..<50).map { "token-\($0)" }
        let text = tokens.enumerated().map { "\(TokenStore.hexDigest(of: $1)) name\($0) infer" }.joined(separator: "\n")
        let store = TokenStore(entries: try TokenFile.parse(text))
        for (index, token) in tokens.enumerated() {
            #expect(store.check("Bearer \(token)", scope: .infer) == .allowed(token: "name\(index)"))
        }
    }

    @Test("policy: health and metrics open unless closed; closed health takes any token, metrics needs read")
    func policy() throws {
        let store = TokenStore(entries: try TokenFile.parse(Self.goodFile))
        let open = AccessPolicy(tokens: store)
        #expect(open.check(.health, authorization: nil, count: 0) == .allowed(token: nil))
        #expect(open.check(.metrics, authorization: nil, count: 0) == .allowed(token: nil))
        #expect(open.check(.scope(.read), authorization: nil, count: 0) == .unauthenticated(.missing))
        let closed = AccessPolicy(tokens: store, health: true, metrics: true)
        #expect(closed.check(.health, authorization: nil, count: 0) == .unauthenticated(.missing))
        #expect(closed.check(.health, authorization: "Bearer \(Self.runner)", count: 1) == .allowed(token: "ci-runner"))
        #expect(closed.check(.metrics, authorization: "Bearer \(Self.runner)", count: 1) == .allowed(token: "ci-runner"))
        let inferOnly = TokenStore(entries: try TokenFile.parse("\(TokenStore.hexDigest(of: "x")) x infer\n"))
        #expect(AccessPolicy(tokens: inferOnly, metrics: true).check(.metrics, authorization: "Bearer x", count: 1)
            == .forbidden(token: "x", scope: .read))
    }

    @Test("challenges: no error attribute without a token, invalid_token with one, insufficient_scope on 403")
    func challenges() {
        #expect(AccessDecision.unauthenticated(.missing).challenge == #"Bearer realm="maas""#)
        #expect(AccessDecision.unauthenticated(.wrongScheme).challenge == #"Bearer realm="maas""#)
        #expect(AccessDecision.unauthenticated(.unknown).challenge == #"Bearer realm="maas", error="invalid_token""#)
        #expect(AccessDecision.forbidden(token: "t", scope: .infer).challenge
            == #"Bearer realm="maas", error="insufficient_scope", scope="infer""#)
        #expect(AccessDecision.allowed(token: nil).challenge == nil)
    }

    @Test("reload: a new file takes effect, a bad one keeps the old tokens and names its line")
    func reload() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("maas-tokens-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("tokens").path
        try "\(TokenStore.hexDigest(of: "old")) old infer\n".write(toFile: path, atomically: true, encoding: .utf8)
        let store = try TokenStore(path: path)
        #expect(store.check("Bearer old", scope: .infer) == .allowed(token: "old"))

        try "\(TokenStore.hexDigest(of: "new")) new infer\n".write(toFile: path, atomically: true, encoding: .utf8)
        try store.reload()
        #expect(store.check("Bearer new", scope: .infer) == .allowed(token: "new"))
        #expect(store.check("Bearer old", scope: .infer) == .unauthenticated(.unknown))

        try "\(TokenStore.hexDigest(of: "newer")) newer infer\nbroken line\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: TokenFileError(path: path, line: 2, "expected 'SHA256HEX NAME SCOPES', got 2 fields")) { try store.reload() }
        #expect(store.check("Bearer new", scope: .infer) == .allowed(token: "new"))
        #expect(store.check("Bearer newer", scope: .infer) == .unauthenticated(.unknown))

        try FileManager.default.removeItem(atPath: path)
        #expect(throws: TokenFileError.self) { try store.reload() }
        #expect(store.check("Bearer new", scope: .infer) == .allowed(token: "new"))
        #expect(throws: TokenFileError(path: path, line: 0, "cannot read the token file")) { try TokenStore(path: path) }
    }

    @Test("per-token counters by name and result, never by token")
    func counters() throws {
        let registry = PrometheusCollectorRegistry()
        let store = TokenStore(entries: try TokenFile.parse(Self.goodFile), factory: PrometheusMetricsFactory(registry: registry))
        for _ in 0..<3 { _ = store.check("Bearer \(Self.reader)", scope: .read) }
        _ = store.check("Bearer \(Self.reader)", scope: .infer)
        _ = store.check("Bearer nope", scope: .infer)
        _ = store.check(nil, scope: .infer)
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        let text = String(decoding: buffer, as: UTF8.self)
        #expect(text.contains(#"maas_token_requests_total{token="reader",result="allowed"} 3"#))
        #expect(text.contains(#"maas_token_requests_total{token="reader",result="forbidden"} 1"#))
        #expect(text.contains(#"maas_token_requests_total{token="",result="unauthenticated"} 2"#))
        #expect(text.contains(#"maas_token_requests_total{token="ops",result="allowed"} 0"#))
        #expect(!text.contains(Self.reader))
        #expect(!text.contains("nope"))
    }
}

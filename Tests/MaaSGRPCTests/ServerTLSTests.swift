import Foundation
@testable import MaaSGRPC
import MaaSTestSupport
import NIOCore
import NIOEmbedded
import NIOSSL
import Testing

/// A throwaway certificate and key made by the `openssl` CLI in a temporary directory.
struct TestPair {
    let directory: URL
    let certificate: String
    let key: String

    init(name: String = "server", days: Int = 1) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("maas-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        certificate = directory.appendingPathComponent("\(name).pem").path
        key = directory.appendingPathComponent("\(name).key").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", certificate, "-days", "\(days)", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TLSSetupError(.unreadable, path: certificate, "openssl failed") }
    }

    func remove() { try? FileManager.default.removeItem(at: directory) }
}

/// The error `body` throws, nil when it throws none.
func setupError(_ body: () throws -> Void) -> TLSSetupError? {
    do {
        try body()
        return nil
    } catch {
        return error as? TLSSetupError
    }
}

let opensslAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")

@Suite("Server TLS files and the first byte of a TLS port")
struct ServerTLSTests {
    @Test("a missing or non-PEM certificate is refused, naming the file")
    func unreadableFiles() throws {
        let missing = "/nonexistent/maas/server.pem"
        #expect(throws: TLSSetupError.self) { try ServerTLS(files: ServerTLSFiles(certificateChain: missing, privateKey: missing)) }
        let missingError = setupError { _ = try ServerTLS(files: ServerTLSFiles(certificateChain: missing, privateKey: missing)) }
        let error = try #require(missingError)
        #expect(error.code == .unreadable)
        #expect(error.description.hasPrefix(missing))
        let garbage = FileManager.default.temporaryDirectory.appendingPathComponent("maas-garbage-\(UUID().uuidString).pem").path
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: garbage))
        defer { try? FileManager.default.removeItem(atPath: garbage) }
        let garbageResult = setupError { _ = try ServerTLS(files: ServerTLSFiles(certificateChain: garbage, privateKey: garbage)) }
        let garbageError = try #require(garbageResult)
        #expect(garbageError.code == .unreadable || garbageError.code == .noCertificate)
    }

    @Test("a client certificate without its key is refused")
    func clientPairHalves() {
        #expect(throws: TLSSetupError.self) { try ClientTLSConfiguration(certificateChain: "/tmp/c.pem").makeContext(applicationProtocols: ["h2"]) }
        #expect(throws: TLSSetupError.self) { try ClientTLSConfiguration(privateKey: "/tmp/k.pem").makeContext(applicationProtocols: ["h2"]) }
    }

    @Test("a reload with a bad pair keeps the old one; a good pair replaces it", .enabled(if: opensslAvailable))
    func reload() throws {
        let first = try TestPair()
        let second = try TestPair()
        defer { first.remove(); second.remove() }
        let work = try TestPair()
        defer { work.remove() }
        try FileManager.default.removeItem(atPath: work.certificate)
        try FileManager.default.removeItem(atPath: work.key)
        try FileManager.default.copyItem(atPath: first.certificate, toPath: work.certificate)
        try FileManager.default.copyItem(atPath: first.key, toPath: work.key)
        let tls = try ServerTLS(files: ServerTLSFiles(certificateChain: work.certificate, privateKey: work.key))
        let served = tls.certificate

        // The other pair's key with this certificate: BoringSSL refuses the mismatch.
        try FileManager.default.removeItem(atPath: work.key)
        try FileManager.default.copyItem(atPath: second.key, toPath: work.key)
        let mismatchResult = setupError { try tls.reload() }
        let mismatch = try #require(mismatchResult)
        #expect(mismatch.code == .rejected)
        #expect(tls.certificate == served)

        try FileManager.default.removeItem(atPath: work.certificate)
        try FileManager.default.copyItem(atPath: second.certificate, toPath: work.certificate)
        let reloaded = try tls.reload()
        #expect(reloaded != served)
        #expect(tls.certificate == reloaded)
    }

    @Test("cleartext on a TLS-only port: HTTP/1.1 is told why, the h2c preface is closed", .enabled(if: opensslAvailable))
    func cleartextRefused() throws {
        let pair = try TestPair()
        defer { pair.remove() }
        let tls = try ServerTLS(files: ServerTLSFiles(certificateChain: pair.certificate, privateKey: pair.key))

        let http1 = EmbeddedChannel(handler: TLSSniffer(tls: tls))
        try http1.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try http1.writeInbound(ByteBuffer(string: "GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n"))
        let reply = try #require(try http1.readOutbound(as: ByteBuffer.self))
        #expect(String(buffer: reply).hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(String(buffer: reply).contains("speaks TLS"))
        #expect(!http1.isActive)

        let h2c = EmbeddedChannel(handler: TLSSniffer(tls: tls))
        try h2c.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try h2c.writeInbound(ByteBuffer(bytes: ProtocolSniffer.http2Preface))
        #expect(try h2c.readOutbound(as: ByteBuffer.self) == nil)
        #expect(!h2c.isActive)
    }

    @Test("a ClientHello gets the TLS handler; cleartext passes through when allowed", .enabled(if: opensslAvailable))
    func firstByte() throws {
        let pair = try TestPair()
        defer { pair.remove() }
        let tls = try ServerTLS(files: ServerTLSFiles(certificateChain: pair.certificate, privateKey: pair.key))
        let channel = EmbeddedChannel(handler: TLSSniffer(tls: tls))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        // A record header only (handshake, TLS 1.0 record version, length 0): enough to decide.
        try channel.writeInbound(ByteBuffer(bytes: [0x16, 0x03, 0x01]))
        _ = try channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: TLSSniffer.self) }
        _ = try? channel.finish()

        let mixed = try ServerTLS(files: ServerTLSFiles(certificateChain: pair.certificate, privateKey: pair.key), allowCleartext: true)
        let cleartext = EmbeddedChannel(handler: TLSSniffer(tls: mixed))
        try cleartext.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try cleartext.writeInbound(ByteBuffer(bytes: ProtocolSniffer.http2Preface))
        #expect(try cleartext.readInbound(as: ByteBuffer.self) == ByteBuffer(bytes: ProtocolSniffer.http2Preface))
        #expect(throws: (any Error).self) { try cleartext.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self) }
    }

    @Test("GRPCClient over TLS: a trusted server answers, an untrusted one fails the handshake", .enabled(if: opensslAvailable))
    func clientOverTLS() async throws {
        let pair = try TestPair()
        let stranger = try TestPair()
        defer { pair.remove(); stranger.remove() }
        let tls = try ServerTLS(files: ServerTLSFiles(certificateChain: pair.certificate, privateKey: pair.key))
        let server = try await TestServer.start(services: [EchoService()], tls: tls)
        for host in ["localhost", "127.0.0.1"] {
            var configuration = GRPCClientConfiguration()
            configuration.tls = ClientTLSConfiguration(trustRoots: pair.certificate)
            let client = try await GRPCClient.connect(host: host, port: server.port, configuration: configuration)
            let reply = try await client.unary(path: "/maas.testing.Echo/Unary", request: ByteBuffer(bytes: [1, 2, 3]), timeout: .seconds(5))
            #expect(reply.message == ByteBuffer(bytes: [1, 2, 3]))
            client.close()
        }
        var untrusting = GRPCClientConfiguration()
        untrusting.tls = ClientTLSConfiguration(trustRoots: stranger.certificate)
        await #expect(throws: TLSHandshakeError.self) {
            _ = try await GRPCClient.connect(host: "localhost", port: server.port, configuration: untrusting)
        }
        // Cleartext to the TLS port: the call fails, nothing hangs.
        let cleartext = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: RPCError.self) {
            _ = try await cleartext.unary(path: "/maas.testing.Echo/Unary", request: ByteBuffer(), timeout: .seconds(5))
        }
        cleartext.close()
        try await server.stop()
    }

    @Test("UTC times in log lines", arguments: [(0, "1970-01-01T00:00:00Z"), (1_796_142_605, "2026-12-01T16:30:05Z")])
    func utc(seconds: Int, expected: String) {
        #expect(utcString(seconds) == expected)
    }
}

import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL

/// The PEM files of a TLS serving port.
public struct ServerTLSFiles: Sendable, Hashable {
    /// The server's certificate, then any intermediates.
    public var certificateChain: String
    /// The private key of the first certificate.
    public var privateKey: String
    /// CA certificates that sign client certificates. Given, every client must present one
    /// (mTLS); nil, clients are not asked for one.
    public var clientCA: String?

    public init(certificateChain: String, privateKey: String, clientCA: String? = nil) {
        self.certificateChain = certificateChain
        self.privateKey = privateKey
        self.clientCA = clientCA
    }
}

/// A certificate, key or CA file that cannot serve: the file and why.
public struct TLSSetupError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// The file is missing, unreadable or not PEM.
        case unreadable
        /// The file holds no certificate.
        case noCertificate
        /// The server certificate's notAfter is past.
        case expired
        /// The server certificate's notBefore is still ahead.
        case notYetValid
        /// BoringSSL refused the pair, most often because the key is not the certificate's.
        case rejected
    }

    public var code: Code
    public var path: String
    public var message: String

    public init(_ code: Code, path: String, _ message: String) {
        self.code = code
        self.path = path
        self.message = message
    }

    public var description: String { "\(path): \(message)" }
}

/// TLS on a ``GRPCServer`` port: TLS 1.2 or later, ALPN `h2` (gRPC, REST over HTTP/2) and
/// `http/1.1` (REST), client certificates required when the files name a client CA.
///
/// ```swift
/// let tls = try ServerTLS(files: ServerTLSFiles(certificateChain: "server.pem", privateKey: "server.key"))
/// let server = GRPCServer(host: "0.0.0.0", port: 8001, services: services, logger: logger, tls: tls)
/// // on SIGHUP:
/// try tls.reload()
/// ```
///
/// Each new connection takes the context current when it is accepted, so ``reload()`` changes
/// what new handshakes present and leaves open connections as they are.
public final class ServerTLS: Sendable {
    /// The leaf certificate being served, for logs.
    public struct Certificate: Sendable, Hashable, CustomStringConvertible {
        /// Serial number, lower-case hex.
        public var serial: String
        /// notBefore and notAfter, seconds since 1970 (UTC).
        public var notValidBefore: Int
        public var notValidAfter: Int

        public var description: String { "serial \(serial), valid \(utcString(notValidBefore)) to \(utcString(notValidAfter))" }
    }

    public let files: ServerTLSFiles
    /// Whether the port also takes cleartext connections (HTTP/2 prior knowledge, HTTP/1.1):
    /// the first byte of a connection tells a TLS ClientHello from cleartext.
    public let allowCleartext: Bool
    private let current: NIOLockedValueBox<(context: NIOSSLContext, certificate: Certificate)>

    /// Reads the files and builds the TLS context.
    /// - Throws: ``TLSSetupError`` naming the file that cannot serve.
    /// - Important: reads files and parses keys: call it off the event loops.
    public init(files: ServerTLSFiles, allowCleartext: Bool = false) throws(TLSSetupError) {
        self.files = files
        self.allowCleartext = allowCleartext
        self.current = NIOLockedValueBox(try Self.load(files, now: Int(time(nil))))
    }

    /// The certificate new handshakes present.
    public var certificate: Certificate { current.withLockedValue { $0.certificate } }

    /// Re-reads the files; new handshakes use the new pair, open connections keep theirs.
    /// - Returns: the certificate now served.
    /// - Throws: ``TLSSetupError`` when the new files cannot serve; the old pair stays.
    @discardableResult
    public func reload() throws(TLSSetupError) -> Certificate {
        let loaded = try Self.load(files, now: Int(time(nil)))
        current.withLockedValue { $0 = loaded }
        return loaded.certificate
    }

    /// A handler for one accepted connection, with the current context.
    func makeHandler() -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: current.withLockedValue { $0.context })
    }

    static func load(_ files: ServerTLSFiles, now: Int) throws(TLSSetupError) -> (context: NIOSSLContext, certificate: Certificate) {
        let chain = try readPEMCertificates(files.certificateChain)
        let leaf = chain[0]
        let certificate = Certificate(
            serial: leaf.serialNumber.map { hex($0) }.joined(),
            notValidBefore: Int(leaf.notValidBefore), notValidAfter: Int(leaf.notValidAfter))
        // A server presenting an expired certificate fails every handshake: refuse at once.
        guard certificate.notValidAfter > now else {
            throw TLSSetupError(.expired, path: files.certificateChain, "the certificate expired at \(utcString(certificate.notValidAfter))")
        }
        guard certificate.notValidBefore <= now else {
            throw TLSSetupError(.notYetValid, path: files.certificateChain, "the certificate is not valid before \(utcString(certificate.notValidBefore))")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: files.privateKey, format: .pem)
        } catch {
            throw TLSSetupError(.unreadable, path: files.privateKey, "cannot read a PEM private key: \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["h2", "http/1.1"]
        // On close, how long to wait for the client's close_notify: shutdown waits for it.
        configuration.shutdownTimeout = .seconds(1)
        if let clientCA = files.clientCA {
            configuration.trustRoots = .certificates(try readPEMCertificates(clientCA))
            configuration.certificateVerification = .noHostnameVerification
            configuration.sendCANameList = true
        }
        do {
            return (try NIOSSLContext(configuration: configuration), certificate)
        } catch {
            throw TLSSetupError(.rejected, path: files.privateKey, "the key and certificate do not make a TLS context (is this the certificate's key?): \(error)")
        }
    }
}

/// The certificates of a PEM file, at least one.
func readPEMCertificates(_ path: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
    let certificates: [NIOSSLCertificate]
    do {
        certificates = try NIOSSLCertificate.fromPEMFile(path)
    } catch {
        throw TLSSetupError(.unreadable, path: path, "cannot read PEM certificates: \(error)")
    }
    guard !certificates.isEmpty else { throw TLSSetupError(.noCertificate, path: path, "no certificate in the file") }
    return certificates
}

private func hex(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
}

/// `2026-12-01T16:30:00Z`.
func utcString(_ seconds: Int) -> String {
    var time = time_t(seconds)
    var parts = tm()
    guard gmtime_r(&time, &parts) != nil else { return "\(seconds)" }
    func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
}

import MaaSCore
@testable import MaaSGRPC
import MaaSServer
import MaaSTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@Suite("gRPC server protocol, in-process")
struct ServerProtocolTests {
    let echo = "/maas.testing.Echo/"

    func harness(_ configuration: GRPCServerConfiguration = GRPCServerConfiguration(), services: [any RPCService] = []) throws -> EmbeddedServerHarness {
        try EmbeddedServerHarness(services: [EchoService(), HealthService(provider: HealthStatusProvider())] + services, configuration: configuration)
    }

    @Test("unary echo, whole or one byte at a time", arguments: [false, true])
    func unaryEcho(byteByByte: Bool) throws {
        let h = try harness()
        h.byteByByte = byteByByte
        let payload = Array("hello over nghttp2".utf8)
        let id = h.client.request(path: echo + "Unary", body: RawHTTP2Client.message(payload))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.header(":status") == "200")
        #expect(response.header("content-type") == "application/grpc")
        #expect(response.messages == [payload])
        #expect(response.grpcStatus == 0)
        #expect(response.closed && response.resetCode == nil)
    }

    @Test("first SETTINGS advertise our limits")
    func settings() throws {
        let h = try harness()
        try h.exchange()
        let session = h.client.session!
        #expect(session.remoteSetting(H2SettingID.maxConcurrentStreams) == 256)
        #expect(session.remoteSetting(H2SettingID.initialWindowSize) >= 1 << 20)
        #expect(session.remoteSetting(H2SettingID.maxHeaderListSize) == 16 << 10)
        // RFC 7540 priorities stay on: without them nghttp2 keeps no closed streams and cannot
        // answer frames on them with STREAM_CLOSED (h2spec 5.1), nor check PRIORITY frames.
        #expect(session.remoteSetting(H2SettingID.noRFC7540Priorities) == 0)
    }

    @Test("content-type that is not gRPC gets HTTP 415", arguments: ["text/plain", "application/json", "application/grpc+json", nil])
    func wrongContentType(contentType: String?) throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", headers: [("content-type", contentType)], body: RawHTTP2Client.message([1]))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.header(":status") == "415")
        #expect(response.grpcMessage?.contains("content-type") == true)
        try expectFreshCallSucceeds(h)
    }

    @Test("a method other than POST gets HTTP 405")
    func notPost() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", headers: [(":method", "PUT")], body: RawHTTP2Client.message([1]))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.header(":status") == "405")
        #expect(response.grpcMessage?.contains("PUT") == true)
        try expectFreshCallSucceeds(h)
    }

    @Test("partial messages past the connection's budget are RESOURCE_EXHAUSTED")
    func inboundBudget() throws {
        var configuration = GRPCServerConfiguration()
        configuration.maxBufferedBytesPerConnection = 1000
        let h = try harness(configuration)
        // Two streams each hold 600 bytes of an unfinished 900-byte message.
        let partial = Array(RawHTTP2Client.message(Array(repeating: 3, count: 900)).prefix(605))
        let first = h.client.request(path: echo + "Unary", body: partial, end: false)
        try h.exchange()
        #expect(h.client.responses[first]!.grpcStatus == nil)
        let second = h.client.request(path: echo + "Unary", body: partial, end: false)
        try h.exchange()
        let response = h.client.responses[second]!
        #expect(response.grpcStatus == StatusCode.resourceExhausted.rawValue)
        #expect(response.grpcMessage?.contains("partial messages") == true)
        #expect(h.connection.bufferedInboundByteCount == 605)
    }

    @Test("content-type variants gRPC allows", arguments: ["application/grpc", "application/grpc+proto", "application/grpc; charset=utf-8"])
    func allowedContentTypes(contentType: String) throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", headers: [("content-type", contentType)], body: RawHTTP2Client.message([7]))
        try h.exchange()
        #expect(h.client.responses[id]!.grpcStatus == 0)
    }

    @Test("malformed grpc-timeout is rejected", arguments: ["1", "S", "123456789S", "10x", "1.5S", "-1S", "1s"])
    func badTimeout(value: String) throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", headers: [("grpc-timeout", value)], body: RawHTTP2Client.message([1]))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.internal.rawValue)
        #expect(response.grpcMessage?.contains("grpc-timeout") == true)
        try expectFreshCallSucceeds(h)
    }

    @Test("bad or unknown paths are UNIMPLEMENTED", arguments: [
        ("/onlyone", "malformed method path"), ("/a/b/c", "malformed method path"), ("//Method", "malformed method path"),
        ("/no.such.Service/Method", "unknown service 'no.such.Service'"),
        ("/maas.testing.Echo/Nope", "method 'Nope' is not implemented by service 'maas.testing.Echo'"),
    ])
    func badPath(path: String, message: String) throws {
        let h = try harness()
        let id = h.client.request(path: path, body: RawHTTP2Client.message([1]))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.header(":status") == "200")
        #expect(response.grpcStatus == StatusCode.unimplemented.rawValue)
        #expect(response.grpcMessage?.contains(message) == true, "\(String(describing: response.grpcMessage))")
        // Trailers-Only: status in the one HEADERS frame, no body.
        #expect(response.body.isEmpty && response.trailers.isEmpty)
    }

    @Test("compressed flag without grpc-encoding is INTERNAL")
    func compressedWithoutEncoding() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", body: RawHTTP2Client.message([1, 2, 3], flag: 1))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.internal.rawValue)
        #expect(response.grpcMessage?.contains("compressed flag") == true)
        try expectFreshCallSucceeds(h)
    }

    @Test("unsupported grpc-encoding is UNIMPLEMENTED with grpc-accept-encoding")
    func unsupportedEncoding() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", headers: [("grpc-encoding", "gzip")], body: RawHTTP2Client.message([1], flag: 1))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.unimplemented.rawValue)
        #expect(response.header("grpc-accept-encoding") == "identity")
        #expect(response.grpcMessage?.contains("gzip") == true)
    }

    @Test("identity grpc-encoding is accepted")
    func identityEncoding() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", headers: [("grpc-encoding", "identity")], body: RawHTTP2Client.message([5]))
        try h.exchange()
        #expect(h.client.responses[id]!.messages == [[5]])
    }

    @Test("oversized length prefix is RESOURCE_EXHAUSTED before the body arrives")
    func oversizedMessage() throws {
        var configuration = GRPCServerConfiguration()
        configuration.maxReceiveMessageSize = 1024
        let h = try harness(configuration)
        // Only the 5-byte prefix is sent: the server must answer without waiting for 2000 bytes.
        let prefix = Array(RawHTTP2Client.message(Array(repeating: 0, count: 2000)).prefix(5))
        let id = h.client.request(path: echo + "Unary", body: prefix, end: false)
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.resourceExhausted.rawValue)
        #expect(response.grpcMessage == "received message larger than max (2000 vs. 1024 bytes)")
        #expect(response.closed)
        try expectFreshCallSucceeds(h)
    }

    @Test("message at exactly the limit is accepted")
    func messageAtLimit() throws {
        var configuration = GRPCServerConfiguration()
        configuration.maxReceiveMessageSize = 1024
        let h = try harness(configuration)
        let payload = [UInt8](repeating: 9, count: 1024)
        let id = h.client.request(path: echo + "Unary", body: RawHTTP2Client.message(payload))
        try h.exchange()
        #expect(h.client.responses[id]!.messages == [payload])
    }

    @Test("stream that ends mid-message is INTERNAL")
    func truncatedMessage() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", body: Array(RawHTTP2Client.message(Array(repeating: 1, count: 10)).prefix(8)))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.internal.rawValue)
        #expect(response.grpcMessage?.contains("middle of a message") == true)
        #expect(h.connection.bufferedInboundByteCount == 0)
        try expectFreshCallSucceeds(h)
    }

    @Test("unary with two or zero request messages is INTERNAL", arguments: [2, 0])
    func unaryMessageCount(count: Int) throws {
        let h = try harness()
        let body = (0..<count).flatMap { _ in RawHTTP2Client.message([1]) }
        let id = h.client.request(path: echo + "Unary", body: body)
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.internal.rawValue)
        #expect(response.grpcMessage?.contains(count == 0 ? "without a request message" : "more than one") == true)
    }

    @Test("malformed protobuf is INTERNAL naming the message type")
    func malformedProtobuf() throws {
        let h = try harness()
        let id = h.client.request(path: "/grpc.health.v1.Health/Check", body: RawHTTP2Client.message([0x0A, 0xFF, 0xFF, 0xFF]))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.internal.rawValue)
        #expect(response.grpcMessage?.contains("grpc.health.v1.HealthCheckRequest") == true)
    }

    @Test("RST_STREAM mid-message frees the stream and the connection keeps working")
    func resetMidMessage() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", body: Array(RawHTTP2Client.message(Array(repeating: 1, count: 100)).prefix(50)), end: false)
        try h.exchange()
        #expect(h.connection.bufferedInboundByteCount == 50)
        h.client.reset(id)
        try h.exchange()
        #expect(h.connection.bufferedInboundByteCount == 0)
        #expect(h.connection.openStreamCount == 0)
        try expectFreshCallSucceeds(h)
    }

    @Test("the server enforces grpc-timeout and cancels the handler's work")
    func serverDeadline() throws {
        let probe = CancellationProbe()
        let h = try harness(services: [probe])
        let id = h.client.request(path: "/test.Probe/Hang", headers: [("grpc-timeout", "100m")], body: RawHTTP2Client.message([1]))
        try h.exchange()
        #expect(h.client.responses[id]!.grpcStatus == nil)
        try h.advance(by: .milliseconds(99))
        #expect(h.client.responses[id]!.grpcStatus == nil)
        try h.advance(by: .milliseconds(1))
        let response = h.client.responses[id]!
        #expect(response.grpcStatus == StatusCode.deadlineExceeded.rawValue)
        #expect(response.grpcMessage?.contains("100ms") == true)
        #expect(probe.cancelled)
        // A late answer from the handler is dropped, not sent after the status.
        probe.answerLate()
        try h.exchange()
        #expect(h.client.responses[id]!.body.isEmpty)
    }

    @Test("custom metadata round trip, including -bin keys")
    func metadata() throws {
        let h = try harness()
        let id = h.client.request(
            path: echo + "Unary",
            headers: [("x-echo-text", "hi there"), ("x-echo-blob-bin", "AAEC/w"), ("x-other", "not echoed")],
            body: RawHTTP2Client.message([1]))
        try h.exchange()
        let trailers = h.client.responses[id]!.trailers
        #expect(trailers.contains { $0 == ("x-echo-text", "hi there") })
        // Decoded on the way in, re-encoded unpadded on the way out.
        #expect(trailers.contains { $0 == ("x-echo-blob-bin", "AAEC/w") })
        #expect(!trailers.contains { $0.0 == "x-other" })
    }

    @Test("invalid base64 in a -bin key is INTERNAL")
    func invalidBinaryMetadata() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Unary", headers: [("x-blob-bin", "!!!")], body: RawHTTP2Client.message([1]))
        try h.exchange()
        #expect(h.client.responses[id]!.grpcStatus == StatusCode.internal.rawValue)
    }

    @Test("grpc-message is percent-encoded on the wire")
    func percentEncodedMessage() throws {
        let h = try harness()
        let id = h.client.request(
            path: echo + "Fail", headers: [("x-code", "3"), ("x-message-bin", "MTAwJSDinJc")],  // "100% ✗"
            body: RawHTTP2Client.message([]))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.header("grpc-message") == "100%25 %E2%9C%97")
        #expect(response.grpcMessage == "100% ✗")
    }

    @Test("server streaming, client streaming and bidirectional calls")
    func streamingShapes() throws {
        let h = try harness()
        let server = h.client.request(path: echo + "ServerStream", headers: [("x-count", "4")], body: RawHTTP2Client.message([7]))
        let client = h.client.request(path: echo + "ClientStream", body: RawHTTP2Client.message([1]) + RawHTTP2Client.message([2, 3]))
        let bidi = h.client.request(path: echo + "Bidi", body: RawHTTP2Client.message([4]), end: false)
        try h.exchange()
        #expect(h.client.responses[server]!.messages == [[7], [7], [7], [7]])
        #expect(h.client.responses[client]!.messages == [[1, 2, 3]])
        #expect(h.client.responses[bidi]!.messages == [[4]])
        #expect(h.client.responses[bidi]!.grpcStatus == nil)
        h.client.send(RawHTTP2Client.message([5]), on: bidi, end: true)
        try h.exchange()
        #expect(h.client.responses[bidi]!.messages == [[4], [5]])
        #expect(h.client.responses[bidi]!.grpcStatus == 0)
    }

    @Test("a client that does not read cannot make a stream queue without bound")
    func boundedStreamQueue() throws {
        var configuration = GRPCServerConfiguration()
        configuration.maxQueuedBytesPerStream = 256 << 10
        let h = try harness(configuration)
        // 1000 copies of 1 KiB against the client's 64 KiB stream window.
        let id = h.client.request(path: echo + "ServerStream", headers: [("x-count", "1000")], body: RawHTTP2Client.message(Array(repeating: 1, count: 1024)))
        try h.exchange()
        let response = h.client.responses[id]!
        #expect(response.resetCode == H2ErrorCode.enhanceYourCalm)
        #expect(response.body.count <= 256 << 10)
        #expect(h.connection.queuedOutboundByteCount == 0)
        try expectFreshCallSucceeds(h)
    }

    @Test("nor can many streams together exceed the connection's bound")
    func boundedConnectionQueue() throws {
        var configuration = GRPCServerConfiguration()
        configuration.maxQueuedBytesPerConnection = 512 << 10
        let h = try harness(configuration)
        // 8 streams of 100 KiB each: the client's 64 KiB connection window lets little through.
        let ids = (0..<8).map { _ in
            h.client.request(path: echo + "ServerStream", headers: [("x-count", "100")], body: RawHTTP2Client.message(Array(repeating: 1, count: 1024)))
        }
        try h.exchange()
        let reset = ids.filter { h.client.responses[$0]!.resetCode == H2ErrorCode.enhanceYourCalm }
        #expect(reset.count >= 3)
        #expect(h.connection.queuedOutboundByteCount <= 512 << 10)
    }

    @Test("a connection that never sends its preface is closed")
    func handshakeTimeout() throws {
        let h = try harness()
        #expect(h.channel.isActive)
        h.loop.advanceTime(by: .seconds(9))
        #expect(h.channel.isActive)
        h.loop.advanceTime(by: .seconds(3))
        #expect(!h.channel.isActive)
    }

    @Test("a header block that never completes closes the connection")
    func headerTimeout() throws {
        let h = try harness()
        var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        bytes += [0, 0, 0, 4, 0, 0, 0, 0, 0]  // SETTINGS, empty
        bytes += [0, 0, 3, 1, 0, 0, 0, 0, 1, 0x83, 0x86, 0x84]  // HEADERS without END_HEADERS
        try h.channel.writeInbound(ByteBuffer(bytes: bytes))
        h.loop.advanceTime(by: .seconds(5))
        #expect(h.channel.isActive)
        h.loop.advanceTime(by: .seconds(7))
        #expect(!h.channel.isActive)
    }

    @Test("an idle connection is closed with GOAWAY")
    func idleTimeout() throws {
        var configuration = GRPCServerConfiguration()
        configuration.idleTimeout = .seconds(30)
        let h = try harness(configuration)
        try expectFreshCallSucceeds(h)
        try h.advance(by: .seconds(20))
        #expect(h.channel.isActive)
        try h.advance(by: .seconds(12))
        #expect(h.client.goAwayReceived)
        #expect(!h.channel.isActive)
    }

    @Test("graceful shutdown: GOAWAY, the in-flight call finishes, then the connection closes")
    func gracefulShutdown() throws {
        let probe = CancellationProbe()
        let h = try harness(services: [probe])
        let id = h.client.request(path: "/test.Probe/Hang", body: RawHTTP2Client.message([1]))
        try h.exchange()
        h.connection.beginGracefulShutdown()
        try h.advance(by: .seconds(2))
        #expect(h.client.goAwayReceived)
        #expect(h.channel.isActive)
        probe.answerLate()
        try h.exchange()
        #expect(h.client.responses[id]!.messages == [[1, 2, 3]])
        #expect(h.client.responses[id]!.grpcStatus == 0)
        try h.advance(by: .seconds(1))
        #expect(!h.channel.isActive)
    }

    @Test("graceful shutdown: a stream left open is ended with UNAVAILABLE once the unary calls have finished")
    func shutdownEndsOpenStreams() throws {
        let probe = CancellationProbe()
        let h = try harness(services: [probe])
        let stream = h.client.request(path: echo + "Bidi", body: RawHTTP2Client.message([1]), end: false)
        let unary = h.client.request(path: "/test.Probe/Hang", body: RawHTTP2Client.message([1]))
        try h.exchange()
        h.connection.beginGracefulShutdown()
        try h.advance(by: .seconds(2))
        // The unary call still runs: the stream stays open and keeps working.
        h.client.send(RawHTTP2Client.message([2]), on: stream, end: false)
        try h.exchange()
        #expect(h.client.responses[stream]!.messages == [[1], [2]])
        #expect(h.client.responses[stream]!.grpcStatus == nil)
        probe.answerLate()
        try h.exchange()
        #expect(h.client.responses[unary]!.grpcStatus == 0)
        #expect(h.client.responses[stream]!.grpcStatus == StatusCode.unavailable.rawValue)
        #expect(h.client.responses[stream]!.grpcMessage == "server is shutting down")
        #expect(!h.channel.isActive)
    }

    @Test("graceful shutdown with only a stream open ends it at once")
    func shutdownWithOnlyStreams() throws {
        let h = try harness()
        let id = h.client.request(path: echo + "Bidi", body: RawHTTP2Client.message([1]), end: false)
        try h.exchange()
        h.connection.beginGracefulShutdown()
        try h.exchange()
        #expect(h.client.responses[id]!.messages == [[1]])
        #expect(h.client.responses[id]!.grpcStatus == StatusCode.unavailable.rawValue)
        try h.advance(by: .seconds(1))
        #expect(!h.channel.isActive)
    }

    @Test("a call still running when the grace period ends is cut and reported")
    func gracePeriodExpiry() throws {
        var configuration = GRPCServerConfiguration()
        configuration.shutdownGracePeriod = .seconds(3)
        let probe = CancellationProbe()
        let cut = NIOLockedValueBox(0)
        let h = try EmbeddedServerHarness(services: [EchoService(), probe], configuration: configuration,
                                          onCut: { count in cut.withLockedValue { $0 += count } })
        let id = h.client.request(path: "/test.Probe/Hang", body: RawHTTP2Client.message([1]))
        try h.exchange()
        h.connection.beginGracefulShutdown()
        try h.advance(by: .seconds(3))
        #expect(h.channel.isActive)
        #expect(cut.withLockedValue { $0 } == 0)
        try h.advance(by: .seconds(1))
        #expect(!h.channel.isActive)
        #expect(cut.withLockedValue { $0 } == 1)
        #expect(probe.cancelled)
        #expect(h.client.responses[id]!.grpcStatus == nil)
    }

    private func expectFreshCallSucceeds(_ h: EmbeddedServerHarness, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let id = h.client.request(path: echo + "Unary", body: RawHTTP2Client.message([42]))
        try h.exchange()
        #expect(h.client.responses[id]?.messages == [[42]], sourceLocation: sourceLocation)
        #expect(h.client.responses[id]?.grpcStatus == 0, sourceLocation: sourceLocation)
    }
}

/// `test.Probe/Hang`: never answers by itself; records whether the call was cancelled.
final class CancellationProbe: RPCService {
    private(set) var cancelled = false
    private var responder: UnaryResponder?

    var serviceName: String { "test.Probe" }

    var methods: [String: MethodHandler] {
        ["Hang": .unary { calls in
            for call in calls {
                self.responder = call.responder
                call.context.cancellation.onCancel { self.cancelled = true }
            }
        }]
    }

    func answerLate() {
        responder?.succeed(ByteBuffer(bytes: [1, 2, 3]))
    }
}

// Touched only from the embedded loop's thread, which is the test's.
extension CancellationProbe: @unchecked Sendable {}

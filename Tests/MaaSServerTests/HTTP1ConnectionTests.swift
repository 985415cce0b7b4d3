import MaaSCore
import MaaSGRPC
import MaaSModels
import NIOCore
import NIOEmbedded
import Synchronization
import Testing

@testable import MaaSServer

/// The HTTP/1.1 pipeline (HTTPFrontend.install) on an EmbeddedChannel, bytes in and bytes out:
/// regressions the http fuzz harness found (their inputs are in Tests/Fuzz/corpus/http).
@Suite("HTTP/1.1 connection")
struct HTTP1ConnectionTests {
    final class Records: AccessRecorder {
        let statuses = Mutex<[Int]>([])
        func record(_ record: AccessRecord) { statuses.withLock { $0.append(record.status) } }
    }

    /// What the server wrote for `input` (one read), whether the connection is closed after
    /// it, and the statuses the access log got.
    static func exchange(_ input: String) throws -> (output: String, closed: Bool, records: [Int]) {
        let records = Records()
        var limits = HTTPFrontend.Limits()
        limits.accessLog = records
        let core = InferenceCore(repository: ModelRepository(path: nil), readiness: InferenceCore.Readiness(), explicitControl: false)
        let channel = EmbeddedChannel()
        try HTTPFrontend.install(on: channel, core: core, limits: limits)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
        try channel.writeInbound(ByteBuffer(string: input))
        channel.embeddedEventLoop.run()
        var output = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { output += String(buffer: buffer) }
        let closed = !channel.isActive
        _ = try channel.finish(acceptAlreadyClosed: true)
        return (output, closed, records.statuses.withLock { $0 })
    }

    /// The status line of each response: `HTTP/1.x` and a status code.
    static func statusLines(_ output: String) -> [Substring] {
        var lines: [Substring] = []
        var rest = output[...]
        while let start = rest.firstRange(of: "HTTP/1.") {
            let line = rest[start.lowerBound...].prefix { $0 != "\r\n" }
            if line.dropFirst(9).prefix(3).allSatisfy(\.isNumber), line.count > 12 { lines.append(line) }
            rest = rest[start.upperBound...]
        }
        return lines
    }

    @Test("a version other than 1.x is answered once (swift-nio reports it twice)")
    func invalidVersionAnsweredOnce() throws {
        let (output, closed, records) = try Self.exchange("GET /v2/health/ready HTTP/2.0\r\nHost: x\r\n\r\n")
        #expect(Self.statusLines(output) == ["HTTP/1.1 400 Bad Request"])
        #expect(output.contains("invalid HTTP version"))
        #expect(output.hasSuffix("}"), "nothing after the answer's body")
        #expect(closed)
        #expect(records == [400])
    }

    @Test("bytes after a request that asked to close are not answered", arguments: [
        "GET /v2/health/live HTTP/1.0\r\nHost: x\r\n\r\nGET /v2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\nnot a request\r\n\r\n",
    ])
    func nothingAfterClose(input: String) throws {
        let (output, closed, records) = try Self.exchange(input)
        #expect(Self.statusLines(output).count == 1)
        #expect(output.hasSuffix("connection: close\r\n\r\n"), "the one answer closes the connection, and nothing follows it")
        #expect(closed)
        #expect(records == [200])
    }

    @Test("a body that does not parse is still answered when the server began to drain during it")
    func drainingBodyAnswered() throws {
        let core = InferenceCore(repository: ModelRepository(path: nil), readiness: InferenceCore.Readiness(), explicitControl: false)
        let channel = EmbeddedChannel()
        try HTTPFrontend.install(on: channel, core: core)
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
        try channel.writeInbound(ByteBuffer(string: "POST /predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
        channel.pipeline.fireUserInboundEventTriggered(ServerDrainEvent())
        try channel.writeInbound(ByteBuffer(string: "zz\r\n"))
        var output = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { output += String(buffer: buffer) }
        #expect(Self.statusLines(output) == ["HTTP/1.1 400 Bad Request"])
        #expect(output.contains("malformed HTTP/1.1 request"))
        #expect(!channel.isActive)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a load or unload outside explicit mode is refused at once, on the event loop")
    func loadRefusedAtOnce() throws {
        let (output, closed, records) = try Self.exchange(
            "POST /v2/repository/models/seed/load HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST /v2/repository/models/seed/unload HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        #expect(Self.statusLines(output) == ["HTTP/1.1 400 Bad Request", "HTTP/1.1 400 Bad Request"])
        #expect(output.contains("explicit model load is only allowed with --model-control-mode explicit"))
        #expect(output.contains("explicit model unload is only allowed with --model-control-mode explicit"))
        #expect(!closed)
        #expect(records == [400, 400])
    }
}

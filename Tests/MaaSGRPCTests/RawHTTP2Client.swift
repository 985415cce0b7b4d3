@testable import MaaSGRPC
import NIOCore
import NIOEmbedded
import Logging
import MaaSCore

/// A bare HTTP/2 client on nghttp2 that sends whatever headers and bytes a test asks for, so
/// tests can send what no well-behaved gRPC client would.
final class RawHTTP2Client: H2SessionDelegate {
    struct Response {
        var headers: [(String, String)] = []
        var trailers: [(String, String)] = []
        var body: [UInt8] = []
        var closed = false
        var resetCode: UInt32?

        func header(_ name: String) -> String? {
            headers.first { $0.0 == name }?.1
        }

        /// grpc-status from the trailers, or from the headers of a Trailers-Only response.
        var grpcStatus: Int32? {
            (trailers.first { $0.0 == "grpc-status" } ?? headers.first { $0.0 == "grpc-status" }).flatMap { Int32($0.1) }
        }

        var grpcMessage: String? {
            (trailers.first { $0.0 == "grpc-message" } ?? headers.first { $0.0 == "grpc-message" }).map { PercentEncoding.decode($0.1) }
        }

        /// Body split into gRPC messages.
        var messages: [[UInt8]] {
            var out: [[UInt8]] = []
            var index = 0
            while index + 5 <= body.count {
                let length = Int(body[index + 1]) << 24 | Int(body[index + 2]) << 16 | Int(body[index + 3]) << 8 | Int(body[index + 4])
                out.append(Array(body[index + 5..<index + 5 + length]))
                index += 5 + length
            }
            return out
        }
    }

    private(set) var session: H2Session!
    private(set) var responses: [Int32: Response] = [:]
    private var bodies: [Int32: (bytes: [UInt8], offset: Int, end: Bool)] = [:]
    private(set) var goAwayReceived = false

    init() {
        session = H2Session(role: .client, delegate: self)
        session.submitSettings([(H2SettingID.enablePush, 0)])
    }

    /// Opens a stream with the standard gRPC request headers, adjusted by `headers`
    /// (a nil value removes a header), carrying `body` and ending the stream if `end`.
    @discardableResult
    func request(
        path: String,
        headers overrides: [(String, String?)] = [],
        body: [UInt8] = [],
        end: Bool = true
    ) -> Int32 {
        var fields: [(String, String)] = [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "test"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ]
        for (name, value) in overrides {
            // Replaced in place: pseudo-headers must stay ahead of regular ones.
            if let index = fields.firstIndex(where: { $0.0 == name }) {
                if let value { fields[index].1 = value } else { fields.remove(at: index) }
            } else if let value {
                fields.append((name, value))
            }
        }
        let id = session.submitRequest(headers: HeaderBlock(fields))!
        bodies[id] = (body, 0, end)
        responses[id] = Response()
        return id
    }

    /// Appends more request bytes to an open stream, ending it if `end`.
    func send(_ bytes: [UInt8], on id: Int32, end: Bool) {
        bodies[id]!.bytes += bytes
        bodies[id]!.end = end
        session.resumeBody(streamID: id)
    }

    func reset(_ id: Int32) {
        session.resetStream(streamID: id, errorCode: H2ErrorCode.cancel)
    }

    func output() -> [UInt8] {
        var buffer = ByteBuffer()
        _ = try! session.drainOutput(into: &buffer, limit: .max)
        return Array(buffer.readableBytesView)
    }

    func input(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try session.receive($0) }
    }

    static func message(_ payload: [UInt8], flag: UInt8 = 0) -> [UInt8] {
        let length = UInt32(payload.count)
        return [flag, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + payload
    }

    // MARK: H2SessionDelegate

    private var inTrailers: Set<Int32> = []

    func sessionBeginHeaders(streamID: Int32) {
        if responses[streamID]?.headers.isEmpty == false { inTrailers.insert(streamID) }
    }

    func sessionHeader(streamID: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let field = (String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self))
        if inTrailers.contains(streamID) {
            responses[streamID, default: Response()].trailers.append(field)
        } else {
            responses[streamID, default: Response()].headers.append(field)
        }
    }

    func sessionHeadersComplete(streamID: Int32, endStream: Bool) {}

    func sessionData(streamID: Int32, bytes: UnsafeRawBufferPointer) {
        responses[streamID, default: Response()].body += bytes
    }

    func sessionEndStream(streamID: Int32) {}

    func sessionStreamClosed(streamID: Int32, errorCode: UInt32) {
        responses[streamID, default: Response()].closed = true
        if errorCode != 0 { responses[streamID]!.resetCode = errorCode }
    }

    func sessionSettingsReceived() {}

    func sessionGoAway(lastStreamID: Int32, errorCode: UInt32) {
        goAwayReceived = true
    }

    func sessionReadBody(streamID: Int32, into buffer: UnsafeMutableRawBufferPointer) -> H2Session.ReadResult {
        guard var body = bodies[streamID] else { return .end(0, trailers: nil) }
        let count = min(buffer.count, body.bytes.count - body.offset)
        body.bytes.withUnsafeBytes { source in
            buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[body.offset..<body.offset + count]))
        }
        body.offset += count
        bodies[streamID] = body
        if body.offset == body.bytes.count {
            if body.end { return .end(count, trailers: nil) }
            if count == 0 { return .deferred }
        }
        return .bytes(count)
    }

    func sessionSentEndStream(streamID: Int32) {}
}

/// A server connection in an EmbeddedChannel, wired to a ``RawHTTP2Client``: no sockets, virtual
/// time, and optionally one byte at a time.
final class EmbeddedServerHarness {
    let loop = EmbeddedEventLoop()
    let channel: EmbeddedChannel
    let connection: GRPCServerConnection
    let client = RawHTTP2Client()
    var byteByByte = false

    init(
        services: [any RPCService], configuration: GRPCServerConfiguration = GRPCServerConfiguration(),
        onCut: @escaping @Sendable (Int) -> Void = { _ in }
    ) throws {
        connection = GRPCServerConnection(
            configuration: configuration, router: Router(services: services),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), onClose: {}, onCut: onCut)
        channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    /// Moves bytes both ways until neither side has anything to say.
    func exchange() throws {
        for _ in 0..<10_000 {
            var moved = false
            let toServer = client.output()
            if !toServer.isEmpty {
                moved = true
                if byteByByte {
                    for byte in toServer { try channel.writeInbound(ByteBuffer(bytes: [byte])) }
                } else {
                    try channel.writeInbound(ByteBuffer(bytes: toServer))
                }
            }
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
                moved = true
                try client.input(Array(buffer.readableBytesView))
            }
            loop.run()
            if !moved { return }
        }
    }

    func advance(by amount: TimeAmount) throws {
        loop.advanceTime(by: amount)
        try exchange()
    }
}

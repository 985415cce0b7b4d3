// libFuzzer harness: HTTP/1.1 as a client's bytes reach the serving port. The input is the raw
// byte stream of one connection, written in a few reads (split points drawn from a hash of the
// input) into an EmbeddedChannel carrying HTTPFrontend.install's pipeline: ConnectionTimeouts,
// swift-nio's HTTPRequestDecoder (llhttp) with our limits, and RESTHandler over RESTRouter, so
// routing, limits, pipelining, auth, access records and the KServe JSON decoding run on whatever
// llhttp accepts. Then the client half-closes, as `printf ... | nc` does.
//
// The core serves the seed MLP and a model of INT64 and BOOL inputs, with their batchers
// stopped: an inference call goes through the model's checks and is answered UNAVAILABLE at once,
// on the event loop (compute answers on pool threads, which an EmbeddedEventLoop cannot take;
// the onnx harness fuzzes compute). The hash also picks the limits (the server's, or small ones
// that fuzz inputs can pass), whether tokens are needed, and whether the clock jumps past the
// head or the idle timeout between reads.
//
// Properties: no crash, leak or hang; the output is a sequence of well-formed HTTP/1.1 responses
// (status line, header names and values, one content-length that frames the body, none for
// HEAD, JSON bodies that parse) answering the requests in order, at most one each, in the
// request's HTTP version, `100 Continue` only to a request that asked; nothing follows
// `connection: close`; once the input has ended every request is answered or the connection was
// refused, and the connection is closed; each answer has its access record, with its status,
// and its access log line is JSON; answers come on the connection's event loop; the channel and
// its decoder are gone after the input.
import Dispatch
import Glibc
import MaaSCompute
import MaaSCore
import MaaSJSON
import MaaSModels
import MaaSServer
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization

private nonisolated(unsafe) var core: InferenceCore!
private nonisolated(unsafe) var tokens: AccessPolicy!
private let recorder = Recorder()
/// FUZZ_HTTP_TRACE=1: print each input's requests, output and access records (for a crash's input).
private let trace = getenv("FUZZ_HTTP_TRACE") != nil

/// Tokens the seeds send (`authorization: Bearer fuzz-reader` and so on).
private let tokenFile = """
    \(TokenStore.hexDigest(of: "fuzz-reader")) reader read
    \(TokenStore.hexDigest(of: "fuzz-infer")) runner infer
    \(TokenStore.hexDigest(of: "fuzz-admin")) ops admin,read,infer

    """

@_cdecl("LLVMFuzzerInitialize")
public func fuzzHTTPInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>) -> CInt {
    setenv("MAAS_SPIN", "0", 1)
    // An EmbeddedEventLoop used from another thread traps instead of printing a warning: every
    // answer must come back on the connection's loop.
    setenv("SWIFTNIO_STRICT", "1", 1)
    // The stand-in SHA-256 (Tests/Fuzz/Shims/Crypto.swift) against FIPS 180-2's example.
    require(TokenStore.hexDigest(of: "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "the stand-in SHA-256 is wrong")
    let repository = ModelRepository(path: nil, builtIn: [SeedModel.name: (SeedModel.graph(), nil), "typed": (typedGraph(), nil)],
        pool: ComputePool(threadCount: 1))
    let loaded = DispatchSemaphore(value: 0)
    Task {
        await repository.loadAll()
        loaded.signal()
    }
    loaded.wait()
    let versions = repository.loadedVersions()
    require(versions.count == 2, "the harness's models did not load: \(repository.index())")
    for version in versions { version.batcher.stop() }
    let readiness = InferenceCore.Readiness()
    readiness.markReady()
    core = InferenceCore(repository: repository, readiness: readiness, explicitControl: false)
    tokens = AccessPolicy(tokens: TokenStore(entries: try! TokenFile.parse(tokenFile)), health: true, metrics: true)
    return 0
}

/// ids (INT64) and mask (BOOL), both [batch, 4]: their product as FP32.
private func typedGraph() -> ModelGraph {
    ModelGraph(
        name: "typed", producer: "fuzz", opsets: ["": 17],
        inputs: [
            ValueInfo(name: "ids", dataType: .int64, shape: [.symbolic("batch"), .fixed(4)]),
            ValueInfo(name: "mask", dataType: .bool, shape: [.symbolic("batch"), .fixed(4)]),
        ],
        outputs: [ValueInfo(name: "product", dataType: .float32, shape: [.symbolic("batch"), .fixed(4)])],
        initializers: [:],
        nodes: [
            Node(name: "ids", opType: "Cast", inputs: ["ids"], outputs: ["idsFloat"], attributes: ["to": .int(1)]),
            Node(name: "mask", opType: "Cast", inputs: ["mask"], outputs: ["maskFloat"], attributes: ["to": .int(1)]),
            Node(name: "product", opType: "Mul", inputs: ["idsFloat", "maskFloat"], outputs: ["product"]),
        ])
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeBufferPointer(start: data, count: size)
    var random = SplitMix64(seed: input.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 })
    var limits = HTTPFrontend.Limits()
    limits.predictModel = SeedModel.name
    limits.metrics = MetricsEndpoint(exporter: { Array("# TYPE fuzz_total counter\nfuzz_total 1\n".utf8) })
    limits.accessLog = recorder
    if random.next() % 4 == 0 {
        limits.maxBodyBytes = 512
        limits.maxHeaderBytes = 256
        limits.maxPipelined = 2
    }
    if random.next() % 4 == 0 { limits.access = tokens }
    // Up to four reads, cut at points drawn from the hash.
    var cuts = (0..<Int(random.next() % 4)).map { _ in size == 0 ? 0 : Int(random.next() % UInt64(size)) }
    cuts = (cuts + [0, size]).sorted()
    // Past the head timeout, or now and then past the idle timeout, after every read.
    let jump: TimeAmount? = switch random.next() % 16 {
    case 0, 1: limits.headerTimeout + .seconds(1)
    case 2: limits.idleTimeout + .seconds(1)
    default: nil
    }
    weak var weakChannel: EmbeddedChannel?
    weak var weakDecoder: ByteToMessageHandler<HTTPRequestDecoder>?
    recorder.reset()
    do {
        let (channel, decoder, heads) = connection(limits)
        weakChannel = channel
        weakDecoder = decoder
        for (start, end) in zip(cuts, cuts.dropFirst()) where start < end {
            guard channel.isActive else { break }
            // An error RESTHandler does not take would end up here; a connection it left open
            // fails the check below.
            _ = try? channel.writeInbound(ByteBuffer(bytes: UnsafeBufferPointer(rebasing: input[start..<end])))
            channel.embeddedEventLoop.run()
            if let jump { channel.embeddedEventLoop.advanceTime(by: jump) }
        }
        if channel.isActive {
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            channel.embeddedEventLoop.run()
        }
        require(!channel.isActive, "the connection is still open after the client's input ended and its answers went out")
        var output: [UInt8] = []
        while let buffer = try! channel.readOutbound(as: ByteBuffer.self) { output += buffer.readableBytesView }
        _ = try? channel.finish(acceptAlreadyClosed: true)
        if trace {
            note("reads \(cuts), clock jump \(String(describing: jump)), body/head limits \(limits.maxBodyBytes)/\(limits.maxHeaderBytes), tokens \(limits.access != nil)")
            for head in heads.value { note("request: \(head.method) \(head.uri) \(head.version) keep-alive \(head.isKeepAlive)") }
            note("output:\n" + String(decoding: output, as: UTF8.self))
            note("access records: \(recorder.taken().map { "\($0.method ?? "-") \($0.status)" })")
        }
        check(output, heads.value, records: recorder.taken(), timedOut: jump != nil)
    }
    require(weakChannel == nil && weakDecoder == nil, "the channel or its decoder outlived the connection")
    return 0
}

/// An EmbeddedChannel with the server's HTTP/1.1 pipeline, connected, plus a handler after the
/// decoder that notes each request head as RESTHandler gets it.
private func connection(_ limits: HTTPFrontend.Limits) -> (EmbeddedChannel, ByteToMessageHandler<HTTPRequestDecoder>, HeadSpy) {
    let channel = EmbeddedChannel()
    try! HTTPFrontend.install(on: channel, core: core, limits: limits)
    let decoder = try! channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
    let spy = HeadSpy()
    try! channel.pipeline.syncOperations.addHandler(spy, position: .after(decoder))
    try! channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 40_000)).wait()
    return (channel, decoder, spy)
}

private final class HeadSpy: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    var value: [HTTPRequestHead] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) { value.append(head) }
        context.fireChannelRead(data)
    }
}

private final class Recorder: AccessRecorder {
    private let records = Mutex<[AccessRecord]>([])

    func record(_ record: AccessRecord) {
        records.withLock { $0.append(record) }
    }

    func reset() { records.withLock { $0 = [] } }
    func taken() -> [AccessRecord] { records.withLock { $0 } }
}

/// One response as written: status, headers, and the body's bytes.
private struct Response {
    var version: String
    var status: Int
    var headers: [(name: String, value: String)]
    var body: ArraySlice<UInt8>

    func header(_ name: String) -> [String] { headers.filter { $0.name.lowercased() == name }.map(\.value) }
    var closes: Bool { header("connection").contains { $0.lowercased() == "close" } }
}

/// The properties in the header comment, over what the server wrote.
private func check(_ output: [UInt8], _ heads: [HTTPRequestHead], records: [AccessRecord], timedOut: Bool) {
    var offset = 0
    var finals: [Response] = []
    var continued = Set<Int>()
    while offset < output.count {
        require(finals.last?.closes != true, "bytes after a response with connection: close")
        // The request this response answers (a parse failure answers none: it comes last).
        let index = finals.count
        let head = index < heads.count ? heads[index] : nil
        let response = parseResponse(output, &offset, headRequest: head?.method == .HEAD)
        if response.status == 100 {
            guard let head else { failure("100 Continue with no request waiting for it") }
            require(head.headers["expect"].contains { $0.lowercased() == "100-continue" }, "100 Continue to a request that did not ask")
            require(!continued.contains(index), "two 100 Continue for one request")
            require(response.headers.isEmpty && response.body.isEmpty, "100 Continue with headers or a body")
            continued.insert(index)
            continue
        }
        finals.append(response)
    }
    // A parse failure (400, or 413 for a head past the limit) comes last and answers no head.
    var answered = finals
    if let last = finals.last, isParseFailure(last) { answered.removeLast() }
    require(answered.count <= heads.count, "\(answered.count) answers to \(heads.count) requests")
    for (response, head) in zip(answered, heads) {
        let version = head.version.major == 1 && head.version.minor == 0 ? "HTTP/1.0" : "HTTP/1.1"
        require(response.version == version, "a \(head.version) request answered as \(response.version)")
        if !head.isKeepAlive { require(response.closes, "a request that asked to close answered without connection: close") }
    }
    // Nothing refused the connection and no timeout closed it: every request is answered, up to
    // the one whose answer closed the connection (nothing follows that one, checked above).
    if answered.count == finals.count, !timedOut, answered.last?.closes != true {
        require(answered.count == heads.count, "\(heads.count) requests, \(answered.count) answers")
    }
    // Every answer written has its access record, in order, with its status; the rest of the
    // records are requests cut by the close (499).
    let written = records.filter { $0.status != 499 }
    require(written.map(\.status) == finals.map(\.status), "access records \(written.map(\.status)), answers \(finals.map(\.status))")
    require(records.count <= heads.count + 1, "\(records.count) access records for \(heads.count) requests")
    var line: [UInt8] = []
    for record in records {
        line.removeAll(keepingCapacity: true)
        AccessLogLine.append(record, to: &line)
        require(line.last == UInt8(ascii: "\n"), "an access log line without its newline")
        _ = line.dropLast().withUnsafeBytes { bytes in
            Result { () throws(JSONError) in try JSONReader.parse(bytes) }.mapError { error in
                failure("an access log line is not JSON (\(error)): \(String(decoding: line, as: UTF8.self))")
            }
        }
    }
}

/// RESTHandler's answer to bytes llhttp refuses: 400 naming the problem, or 413 for a head past
/// the limit, closing the connection.
private func isParseFailure(_ response: Response) -> Bool {
    guard response.closes, [400, 413].contains(response.status), response.version == "HTTP/1.1",
        let message = response.body.withUnsafeBytes({ try? JSONReader.parse($0) })?["error"]?.string
    else { return false }
    return message.hasPrefix("malformed HTTP/1.1 request") || message.hasPrefix("request head exceeds")
}

/// One response at `offset`: status line, headers, content-length, body (none after HEAD, but
/// a parse failure's answer has one whatever the request it cut was).
private func parseResponse(_ output: [UInt8], _ offset: inout Int, headRequest: Bool) -> Response {
    func line() -> ArraySlice<UInt8> {
        guard let end = output[offset...].firstIndex(of: UInt8(ascii: "\n")), end > offset, output[end - 1] == UInt8(ascii: "\r") else {
            failure("a response line without CRLF at byte \(offset)")
        }
        defer { offset = end + 1 }
        return output[offset..<end - 1]
    }
    let status = line()
    let parts = status.split(separator: UInt8(ascii: " "), maxSplits: 2, omittingEmptySubsequences: false)
    require(parts.count == 3, "status line '\(String(decoding: status, as: UTF8.self))'")
    let version = String(decoding: parts[0], as: UTF8.self)
    require(version == "HTTP/1.1" || version == "HTTP/1.0", "status line version '\(version)'")
    guard parts[1].count == 3, parts[1].allSatisfy({ (0x30...0x39).contains($0) }), let code = Int(String(decoding: parts[1], as: UTF8.self)),
        (100...599).contains(code)
    else { failure("status code '\(String(decoding: parts[1], as: UTF8.self))'") }
    require(!parts[2].isEmpty && parts[2].allSatisfy { $0 >= 0x20 && $0 < 0x7f }, "reason phrase of \(code)")
    var headers: [(name: String, value: String)] = []
    while true {
        let field = line()
        if field.isEmpty { break }
        guard let colon = field.firstIndex(of: UInt8(ascii: ":")), colon > field.startIndex else {
            failure("header line '\(String(decoding: field, as: UTF8.self))'")
        }
        let name = field[..<colon]
        require(name.allSatisfy(isTokenByte), "header name '\(String(decoding: name, as: UTF8.self))'")
        let value = field[(colon + 1)...]
        require(value.first == UInt8(ascii: " "), "no space after '\(String(decoding: name, as: UTF8.self)):'")
        require(value.dropFirst().allSatisfy { $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7f) }, "control bytes in header '\(String(decoding: name, as: UTF8.self))'")
        headers.append((String(decoding: name, as: UTF8.self), String(decoding: value.dropFirst(), as: UTF8.self)))
    }
    var response = Response(version: version, status: code, headers: headers, body: [])
    if code == 100 { return response }
    let lengths = response.header("content-length")
    guard lengths.count == 1, let length = Int(lengths[0]), length >= 0 else {
        failure("\(code) with content-length \(lengths)")
    }
    require(response.header("transfer-encoding").isEmpty, "\(code) with transfer-encoding")
    if headRequest, !(response.closes && output.count - offset == length && length > 0) { return response }
    require(output.count - offset >= length, "\(code) declares \(length) body bytes, \(output.count - offset) follow")
    response.body = output[offset..<offset + length]
    offset += length
    if response.header("content-type").first == "application/json" {
        _ = response.body.withUnsafeBytes { bytes in
            Result { () throws(JSONError) in try JSONReader.parse(bytes) }.mapError { error in
                failure("a \(code) JSON body does not parse (\(error)): \(String(decoding: response.body, as: UTF8.self))")
            }
        }
    }
    return response
}

/// `precondition` that says why in optimized builds too (they drop precondition's message).
private func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { failure(message()) }
}

/// A line on standard error, unbuffered (a failure aborts before stdout is flushed).
private func note(_ line: String) {
    var line = line + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

private func failure(_ message: String) -> Never {
    fatalError(message)
}

/// RFC 9110 tchar.
private func isTokenByte(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
    default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
    }
}

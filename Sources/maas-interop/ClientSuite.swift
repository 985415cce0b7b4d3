import ArgumentParser
import MaaSClient
import MaaSCore
import MaaSGRPC
import MaaSProto
import NIOCore

/// Runs our Swift client against a peer that implements `maas.testing.Echo` and health
/// (Tests/interop/echo_server.py, written with grpcio). Prints one line per case; exits non-zero
/// if any fails.
struct ClientSuite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "client")

    @Option var host = "127.0.0.1"
    @Option var port: Int

    func run() async throws {
        let client = try await GRPCClient.connect(host: host, port: port)
        defer { client.close() }
        let echo = "/maas.testing.Echo/"
        var failures = 0

        func check(_ name: String, _ body: () async throws -> Void) async {
            do {
                try await body()
                print("PASS \(name)")
            } catch {
                failures += 1
                print("FAIL \(name): \(error)")
            }
        }

        await check("health check SERVING") {
            let status = try await HealthClient(client).check(timeout: .seconds(5))
            try expect(status == .serving, "status \(status)")
        }
        await check("health check unknown service NOT_FOUND") {
            try await expectError(.notFound) { () async throws(RPCError) in
                _ = try await HealthClient(client).check(service: "no.such.Service", timeout: .seconds(5))
            }
        }
        await check("unary echo with string and binary metadata") {
            var metadata = Metadata()
            metadata.add("x-echo-text", "hello")
            metadata.add("x-echo-blob-bin", binary: [0, 1, 2, 250, 255])
            let request = ByteBuffer(string: "ping")
            let response = try await client.unary(path: echo + "Unary", request: request, metadata: metadata, timeout: .seconds(5))
            try expect(response.message == request, "echoed \(response.message.readableBytes) bytes")
            try expect(response.trailers["x-echo-text"] == "hello", "trailers \(response.trailers)")
            try expect(response.trailers.binary("x-echo-blob-bin") == [0, 1, 2, 250, 255], "binary trailer \(response.trailers)")
        }
        await check("unary 8 MiB message") {
            let request = ByteBuffer(repeating: 0xA5, count: 8 << 20)
            let response = try await client.unary(path: echo + "Unary", request: request, timeout: .seconds(30))
            try expect(response.message == request, "echo differs")
        }
        await check("server streaming") {
            let call = try await client.streaming(path: echo + "ServerStream", metadata: ["x-count": "5"], timeout: .seconds(5))
            call.send(ByteBuffer(string: "tick"))
            call.finishSending()
            var count = 0
            for try await message in call.responses {
                try expect(String(buffer: message) == "tick", "message \(String(buffer: message))")
                count += 1
            }
            try expect(count == 5, "received \(count) messages")
        }
        await check("client streaming") {
            let call = try await client.streaming(path: echo + "ClientStream", timeout: .seconds(5))
            for part in ["a", "bb", "ccc"] { call.send(ByteBuffer(string: part)) }
            call.finishSending()
            var replies: [String] = []
            for try await message in call.responses { replies.append(String(buffer: message)) }
            try expect(replies == ["abbccc"], "replies \(replies)")
        }
        await check("bidirectional streaming") {
            let call = try await client.streaming(path: echo + "Bidi", timeout: .seconds(5))
            var iterator = call.responses.makeAsyncIterator()
            for index in 0..<10 {
                call.send(ByteBuffer(string: "m\(index)"))
                let reply = try await iterator.next()
                try expect(reply.map { String(buffer: $0) } == "m\(index)", "reply \(String(describing: reply))")
            }
            call.finishSending()
            let end = try await iterator.next()
            try expect(end == nil, "stream did not end")
        }
        await check("error status with percent-encoded message") {
            let message = "model 'mlp' says: 100% wrong ✗"
            var metadata: Metadata = ["x-code": "3"]
            metadata.add("x-message-bin", binary: Array(message.utf8))
            try await expectError(.invalidArgument, message: message) { () async throws(RPCError) in
                _ = try await client.unary(path: echo + "Fail", request: ByteBuffer(), metadata: metadata, timeout: .seconds(5))
            }
        }
        await check("deadline exceeded on a slow call") {
            try await expectError(.deadlineExceeded) { () async throws(RPCError) in
                _ = try await client.unary(path: echo + "Slow", request: ByteBuffer(), metadata: ["x-sleep-ms": "3000"], timeout: .milliseconds(50))
            }
        }
        await check("unknown method UNIMPLEMENTED") {
            try await expectError(.unimplemented) { () async throws(RPCError) in
                _ = try await client.unary(path: echo + "NoSuchMethod", request: ByteBuffer(), timeout: .seconds(5))
            }
        }
        await check("100 concurrent calls on one connection") {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        let request = ByteBuffer(string: "call-\(index)")
                        let response = try await client.unary(path: echo + "Unary", request: request, timeout: .seconds(10))
                        try expect(response.message == request, "call \(index) got \(String(buffer: response.message))")
                    }
                }
                try await group.waitForAll()
            }
        }

        print("\(11 - failures) passed, \(failures) failed")
        if failures > 0 { throw ExitCode(1) }
    }
}

struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw Failure(message()) }
}

/// Passes when `body` fails with `code` (and `message`, if given).
func expectError(_ code: StatusCode, message: String? = nil, _ body: () async throws(RPCError) -> Void) async throws {
    do {
        try await body()
    } catch {
        guard error.code == code, message == nil || error.message == message else {
            throw Failure("expected \(code)\(message.map { " '\($0)'" } ?? ""), got \(error)")
        }
        return
    }
    throw Failure("expected \(code), but the call succeeded")
}

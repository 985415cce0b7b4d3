import MaaSCore
import MaaSGRPC
import MaaSTestSupport
import NIOCore
import Testing

@Suite("gRPC client and server over loopback")
struct LoopbackTests {
    let echo = "/maas.testing.Echo/"

    @Test("500 concurrent unary calls share one connection")
    func concurrentCalls() async throws {
        let server = try await TestServer.start(services: [EchoService()])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<500 {
                group.addTask {
                    let request = ByteBuffer(string: "call \(index)")
                    let response = try await client.unary(path: echo + "Unary", request: request, timeout: .seconds(30))
                    #expect(response.message == request)
                }
            }
            try await group.waitForAll()
        }
        client.close()
        try await server.stop()
    }

    @Test("client deadline: DEADLINE_EXCEEDED and the server cancels the work")
    func deadline() async throws {
        let work = CancellableWork()
        let server = try await TestServer.start(services: [EchoService(), work])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        await #expect {
            _ = try await client.unary(path: "/test.Work/Sleep", request: ByteBuffer(), timeout: .milliseconds(20))
        } throws: { error in
            (error as? RPCError)?.code == .deadlineExceeded
        }
        // Left alone, the handler would sleep its 10 s out and report .finished.
        var outcomes = work.outcomes.makeAsyncIterator()
        #expect(await outcomes.next() == .cancelled)
        // The connection is still good.
        let response = try await client.unary(path: echo + "Unary", request: ByteBuffer(string: "ok"), timeout: .seconds(5))
        #expect(String(buffer: response.message) == "ok")
        client.close()
        try await server.stop()
    }

    @Test("graceful shutdown lets an in-flight call finish and refuses new connections")
    func gracefulShutdown() async throws {
        let server = try await TestServer.start(services: [EchoService()])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        async let slow = client.unary(path: echo + "Slow", request: ByteBuffer(string: "late"), metadata: ["x-sleep-ms": "300"], timeout: .seconds(10))
        try await Task.sleep(for: .milliseconds(100))
        let stopped = Task { try await server.stop() }
        #expect(String(buffer: try await slow.message) == "late")
        try await stopped.value
        await #expect(throws: (any Error).self) {
            _ = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        }
    }

    @Test("a server that is gone fails calls with UNAVAILABLE")
    func unavailable() async throws {
        let server = try await TestServer.start(services: [EchoService()])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        try await server.stop()
        try await Task.sleep(for: .milliseconds(50))
        await #expect {
            _ = try await client.unary(path: echo + "Unary", request: ByteBuffer(), timeout: .seconds(5))
        } throws: { error in
            (error as? RPCError)?.code == .unavailable
        }
    }
}

/// `test.Work/Sleep`: sleeps 10 s unless cancelled, and reports which happened.
struct CancellableWork: RPCService {
    enum Outcome: Sendable { case finished, cancelled }

    let outcomes: AsyncStream<Outcome>
    private let report: AsyncStream<Outcome>.Continuation

    init() {
        (outcomes, report) = AsyncStream.makeStream()
    }

    var serviceName: String { "test.Work" }

    var methods: [String: MethodHandler] {
        let report = self.report
        return ["Sleep": .asyncUnary { request, _ in
            do {
                try await Task.sleep(for: .seconds(10))
            } catch {
                report.yield(.cancelled)
                throw error
            }
            report.yield(.finished)
            return request
        }]
    }
}

import MaaSClient
import MaaSCore
import MaaSGRPC
import MaaSProto
import MaaSServer
import MaaSTestSupport
import NIOCore
import Testing

@Suite("Health service and client over loopback")
struct HealthServiceTests {
    @Test("Check reports per-service status; unknown services are NOT_FOUND")
    func check() async throws {
        let provider = HealthStatusProvider()
        provider.setStatus(.notServing, for: "models")
        let server = try await TestServer.start(services: [HealthService(provider: provider)])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        let health = HealthClient(client)
        #expect(try await health.check(timeout: .seconds(5)) == .serving)
        #expect(try await health.check(service: "models", timeout: .seconds(5)) == .notServing)
        await #expect(throws: RPCError(.notFound, "unknown service 'other'")) {
            try await health.check(service: "other", timeout: .seconds(5))
        }
        client.close()
        try await server.stop()
    }

    @Test("Watch streams the current status and every change")
    func watch() async throws {
        let provider = HealthStatusProvider()
        let server = try await TestServer.start(services: [HealthService(provider: provider)])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        var statuses = try await HealthClient(client).watch(service: "svc").makeAsyncIterator()
        #expect(try await statuses.next() == .serviceUnknown)
        provider.setStatus(.serving, for: "svc")
        #expect(try await statuses.next() == .serving)
        provider.setStatus(.serving, for: "svc")  // no change, no message
        provider.setStatus(.notServing, for: "svc")
        #expect(try await statuses.next() == .notServing)
        client.close()
        try await server.stop()
        // The watch was released when its connection went away.
        #expect(provider.watcherCountForTesting == 0)
    }
}

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
        let server = try await TestServer.start(services: [EchoService()])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        await #expect {
            _ = try await client.unary(path: echo + "Slow", request: ByteBuffer(), metadata: ["x-sleep-ms": "5000"], timeout: .milliseconds(20))
        } throws: { error in
            (error as? RPCError)?.code == .deadlineExceeded
        }
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

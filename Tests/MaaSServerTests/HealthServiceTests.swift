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

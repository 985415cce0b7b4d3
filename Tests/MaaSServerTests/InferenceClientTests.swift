import MaaSClient
import MaaSCompute
import MaaSCore
import MaaSGRPC
import MaaSModels
import MaaSServer
import MaaSTestSupport
import Testing

@Suite("Swift InferenceClient over loopback")
struct InferenceClientTests {
    @Test("infer returns what the engine computes; server errors keep their status")
    func inferAndErrors() async throws {
        let pool = ComputePool(threadCount: 1)
        let repository = ModelRepository(path: nil, builtIn: [SeedModel.name: (SeedModel.graph(), nil)], pool: pool)
        await repository.loadAll()
        let readiness = InferenceService.Readiness()
        readiness.markReady()
        let server = try await TestServer.start(services: [InferenceService(repository: repository, readiness: readiness)])
        let client = try await GRPCClient.connect(host: "127.0.0.1", port: server.port)
        let inference = InferenceClient(client)

        #expect(try await inference.isServerLive(timeout: .seconds(5)))
        #expect(try await inference.isServerReady(timeout: .seconds(5)))
        #expect(try await inference.isModelReady("seed", timeout: .seconds(5)))
        #expect(try await !inference.isModelReady("seed", version: "7", timeout: .seconds(5)))

        let x = try Tensor((0..<30).map { Float($0) / 10 - 1.5 }, shape: [3, 10])
        let result = try await inference.infer(model: "seed", inputs: [("input", x)], id: "req-1", timeout: .seconds(5))
        #expect(result.modelName == "seed" && result.modelVersion == "1" && result.id == "req-1")
        let expected = try CompiledModel(graph: SeedModel.graph(), pool: pool).run(["input": x])["output"]!
        #expect(result.output("output")?.shape == [3, 10])
        #expect(result.output("output")?.scalars(as: Float.self) == expected.scalars(as: Float.self))

        await #expect(throws: RPCError.self) { try await inference.infer(model: "nope", inputs: [("input", x)], timeout: .seconds(5)) }
        let narrow = try Tensor(zeros: .float32, shape: [2, 9])
        do throws(RPCError) {
            _ = try await inference.infer(model: "seed", inputs: [("input", narrow)], timeout: .seconds(5))
            Issue.record("a [2, 9] input was accepted")
        } catch {
            #expect(error.code == .invalidArgument && error.message.contains("expects shape [-1, 10], got [2, 9]"), "\(error)")
        }
        client.close()
        try await server.stop()
    }
}

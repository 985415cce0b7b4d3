import Foundation
import MaaSCore
@testable import MaaSClient
import Testing

/// A send that echoes its input as output `y` (times two) after a delay that varies by request,
/// so answers complete out of order; `failures` says how many times each first row fails.
private final class FakeServer: Sendable {
    let failures: [Int: Int]
    let attempts = Attempts()

    init(failures: [Int: Int] = [:]) { self.failures = failures }

    func send(_ inputs: [(name: String, tensor: Tensor)]) async throws -> InferenceResponse {
        let x = inputs[0].tensor
        let first = Int(x.scalars(as: Float.self)[0])
        let attempt = await attempts.next(first)
        try await Task.sleep(for: .microseconds((first * 7919) % 3000))
        if attempt < failures[first, default: 0] { throw InferenceError(.unavailable, "boom at \(first), attempt \(attempt)") }
        return InferenceResponse(modelName: "m", modelVersion: "1", id: "", outputs: [("y", try Tensor(x.scalars(as: Float.self).map { $0 * 2 }, shape: x.shape))])
    }
}

private actor Attempts {
    var counts: [Int: Int] = [:]
    func next(_ key: Int) -> Int {
        defer { counts[key, default: 0] += 1 }
        return counts[key, default: 0]
    }
}

@Suite("Batch inference runner")
struct BatchInferenceTests {
    static func rows(_ count: Int) throws -> Tensor {
        try Tensor((0..<count).flatMap { [Float($0), Float($0) + 0.5] }, shape: [count, 2])
    }

    @Test(arguments: [(1, 1), (7, 3), (64, 8), (1000, 2)])
    func answersArriveInRowOrder(batchSize: Int, concurrency: Int) async throws {
        let server = FakeServer()
        let runner = try BatchInference(inputs: [("x", try Self.rows(250))], batchSize: batchSize, concurrency: concurrency) { try await server.send($0) }
        var delivered: [Range<Int>] = []
        var values: [Float] = []
        let summary = try await runner.run(deliver: { rows, response in
            delivered.append(rows)
            values += response.output("y")!.scalars(as: Float.self)
        }, progress: { _ in })
        #expect(delivered.first?.lowerBound == 0 && delivered.last?.upperBound == 250)
        #expect(zip(delivered, delivered.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
        let expected: [Float] = (0..<250).flatMap { row -> [Float] in [Float(row) * 2, (Float(row) + 0.5) * 2] }
        #expect(values == expected)
        #expect(summary.rows == 250 && summary.requests == runner.requestCount && summary.latencies.count == summary.requests)
        #expect(summary.failures == 0 && summary.retried == 0)
    }

    @Test func aRequestThatFailsOnceIsRetried() async throws {
        let server = FakeServer(failures: [20: 1, 40: 1])
        let runner = try BatchInference(inputs: [("x", try Self.rows(100))], batchSize: 10, concurrency: 4) { try await server.send($0) }
        let summary = try await runner.run(deliver: { _, _ in }, progress: { _ in })
        #expect(summary.rows == 100 && summary.retried == 2 && summary.failures == 0)
    }

    @Test func aRequestThatFailsTwiceStopsTheRunWithItsRows() async throws {
        let server = FakeServer(failures: [30: 2])
        let runner = try BatchInference(inputs: [("x", try Self.rows(100))], batchSize: 10, concurrency: 3) { try await server.send($0) }
        var deliveredUpTo = 0
        do {
            _ = try await runner.run(deliver: { rows, _ in deliveredUpTo = rows.upperBound }, progress: { _ in })
            Issue.record("the run should have failed")
        } catch let failure as BatchInference.Failure {
            #expect(failure.rows == 30..<40)
            #expect(failure.description.hasPrefix("rows 30-39 failed twice: UNAVAILABLE") || failure.description.contains("boom at 30, attempt 1"))
            #expect(failure.message.contains("boom at 30, attempt 1") && failure.message.contains("attempt 0"))
            #expect(failure.summary.failures == 1 && deliveredUpTo <= 30)
        }
    }

    @Test func inputsMustAgreeOnRows() throws {
        #expect(throws: InferenceError.self) {
            try BatchInference(inputs: [("a", try Self.rows(10)), ("b", try Self.rows(9))], batchSize: 4, concurrency: 1) { _ in fatalError() }
        }
    }

    @Test func latencyQuantilesUseTheNearestRank() {
        let summary = BatchInference.Summary(rows: 0, requests: 100, elapsed: .zero, latencies: (1...100).reversed().map { .milliseconds($0) }, retried: 0, failures: 0)
        #expect(summary.latency(quantile: 0.5) == .milliseconds(50))
        #expect(summary.latency(quantile: 0.99) == .milliseconds(99))
        #expect(summary.latency(quantile: 1) == .milliseconds(100))
    }
}

@Suite("Input and output files")
struct FilesTests {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "maas-client-tests-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func csvSkipsAHeaderAndParsesTheModelsDatatype() throws {
        let tensor = try InputFile.csv("a, b ,c\r\n1,2,3\r\n\n4,5,-6\n", type: .int64, source: "x.csv")
        #expect(tensor.shape == [2, 3] && tensor.scalars(as: Int64.self) == [1, 2, 3, 4, 5, -6])
        let floats = try InputFile.csv("1.5,2e3\n-0.25,nan\n", type: .float32, source: "x.csv")
        #expect(floats.shape == [2, 2] && floats.scalars(as: Float.self)[0...2] == [1.5, 2000, -0.25])
    }

    @Test(arguments: [
        ("1,2\n3\n", "x.csv line 2: 1 values, but the first row has 2"),
        ("1,2\n3,x\n", "x.csv line 2, column 2: 'x' is not a INT32 value"),
        ("a,b\n", "x.csv: no rows of numbers"),
    ])
    func csvErrorsSayWhere(text: String, message: String) {
        #expect(throws: InferenceError.invalidInput(message)) { try InputFile.csv(text, type: .int32, source: "x.csv") }
    }

    @Test func jsonNestedArraysAndErrors() throws {
        let tensor = try InputFile.json(Array("[[[1,2]],[[3,4]]]".utf8), type: .float64, source: "x.json")
        #expect(tensor.shape == [2, 1, 2] && tensor.scalars(as: Double.self) == [1, 2, 3, 4])
        let flags = try InputFile.json(Array("[true,false,true]".utf8), type: .bool, source: "x.json")
        #expect(flags.scalars(as: UInt8.self) == [1, 0, 1])
        #expect(throws: InferenceError.invalidInput("x.json: expected an array of 2 at $[1] (the arrays are not rectangular)")) {
            try InputFile.json(Array("[[1,2],[3]]".utf8), type: .float32, source: "x.json")
        }
        #expect(throws: InferenceError.invalidInput("x.json: expected a number at $[1][0], got \"x\"")) {
            try InputFile.json(Array("[[1],[\"x\"]]".utf8), type: .float32, source: "x.json")
        }
    }

    @Test func npyIsConvertedAndRowsReshaped() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let doubles = try Tensor(dataType: .float64, shape: [2, 6], bytes: (0..<12).map { Double($0) }.withUnsafeBytes { $0 })
        try Data(NPY.encode(doubles)).write(to: URL(fileURLWithPath: directory + "/x.npy"))
        let tensor = try InputFile.read(directory + "/x.npy", datatype: "FP32", shape: [-1, 2, 3])
        #expect(tensor.dataType == .float32 && tensor.shape == [2, 2, 3] && tensor.scalars(as: Float.self) == (0..<12).map(Float.init))
        let unchanged = try InputFile.read(directory + "/x.npy", datatype: nil, shape: [-1, -1])
        #expect(unchanged.dataType == .float64 && unchanged.shape == [2, 6])
    }

    @Test func outputsAppearOnlyOnCommit() throws {
        let directory = try temporaryDirectory() + "/nested/out"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let files = try OutputFiles(directory: directory)
        try files.append([("y", try Tensor([1, 2, 3, 4] as [Float], shape: [2, 2])), ("label", try Tensor([7, 8] as [Int64], shape: [2]))])
        try files.append([("label", try Tensor([9] as [Int64], shape: [1])), ("y", try Tensor([5, 6] as [Float], shape: [1, 2]))])
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).allSatisfy { $0.hasPrefix(".") && $0.contains(".partial-") })
        #expect(throws: InferenceError.self) { try files.append([("y", try Tensor([1, 2, 3] as [Float], shape: [1, 3])), ("label", try Tensor([1] as [Int64], shape: [1]))]) }
        try files.commit()
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == ["label.npy", "y.npy"])
        let y = try NPY.decode(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/y.npy"))))
        #expect(y.shape == [3, 2] && y.scalars(as: Float.self) == [1, 2, 3, 4, 5, 6])
        let label = try NPY.decode(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/label.npy"))))
        #expect(label.shape == [3] && label.scalars(as: Int64.self) == [7, 8, 9])
    }

    @Test func discardLeavesTheDirectoryAsItWas() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data("old".utf8).write(to: URL(fileURLWithPath: directory + "/y.npy"))
        do {
            let files = try OutputFiles(directory: directory)
            try files.append([("y", try Tensor([1, 2] as [Float], shape: [1, 2]))])
            files.discard()
        }
        do {
            let files = try OutputFiles(directory: directory)
            try files.append([("y", try Tensor([1, 2] as [Float], shape: [1, 2]))])
            // dropped without commit: deinit discards
            _ = files
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["y.npy"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/y.npy")) == Data("old".utf8))
    }
}

import CoreMetrics
import Foundation
import Glibc
import Logging
import MaaSCore
import Testing

@testable import MaaSServer

/// `--access-log`: the line format (checked by Foundation's JSON parser and date formatter, which
/// the server itself does not use), the file's writes and re-opening, and the bounded buffer.
@Suite("Access log")
struct AccessLogTests {
    static func record(
        path: String? = "/inference.GRPCInferenceService/ModelInfer", wire: AccessRecord.WireProtocol = .grpc,
        method: String? = nil, notes: RequestNotes.Values = RequestNotes.Values()
    ) -> AccessRecord {
        var record = AccessRecord(
            wireProtocol: wire, tls: false, peer: "127.0.0.1:5000", method: method, path: path, status: 0,
            bytesIn: 12, bytesOut: 34, duration: .microseconds(1500), notes: notes)
        record.endedAt = 1_700_000_000_123_456_789
        return record
    }

    static func parse(_ bytes: [UInt8]) throws -> [String: Any] {
        #expect(bytes.last == UInt8(ascii: "\n"))
        #expect(bytes.dropLast().contains(UInt8(ascii: "\n")) == false, "one line")
        return try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (951_782_400_123_456_789, "2000-02-29T00:00:00.123Z"),
        (4_102_444_799_999_000_000, "2099-12-31T23:59:59.999Z"),
        (1_709_251_199_000_000_000, "2024-02-29T23:59:59.000Z"),
    ])
    func timestamps(nanos: Int64, expected: String) {
        #expect(AccessLogLine.timestamp(nanosecondsSinceEpoch: nanos) == expected)
    }

    @Test func timestampsAgreeWithFoundation() {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        for _ in 0..<2000 {
            // Whole seconds from Foundation (1900 to 2200), the milliseconds checked by hand: a
            // Double's fraction would make Foundation's own digits unreliable.
            let seconds = Int64.random(in: -2_208_988_800...7_258_118_400)
            let millis = Int64.random(in: 0...999)
            let whole = formatter.string(from: Date(timeIntervalSince1970: Double(seconds)))
            let expected = whole.dropLast() + "." + String(1000 + millis).dropFirst() + "Z"
            #expect(AccessLogLine.timestamp(nanosecondsSinceEpoch: (seconds * 1000 + millis) * 1_000_000 + 999_999) == expected)
        }
    }

    @Test func grpcLineHasItsFieldsInOrder() throws {
        var notes = RequestNotes.Values()
        notes.model = "seed"
        notes.version = "1"
        notes.token = "runner"
        notes.queue = .microseconds(85)
        notes.compute = .nanoseconds(31_999)
        var out: [UInt8] = []
        AccessLogLine.append(Self.record(notes: notes), to: &out)
        let text = String(decoding: out, as: UTF8.self)
        #expect(text == #"{"time":"2023-11-14T22:13:20.121Z","peer":"127.0.0.1:5000","protocol":"grpc","#
            + #""path":"/inference.GRPCInferenceService/ModelInfer","status":0,"status_name":"OK","model":"seed","#
            + #""version":"1","token":"runner","bytes_in":12,"bytes_out":34,"queue_us":85,"compute_us":31,"duration_us":1500}"#
            + "\n")
    }

    @Test func absentFieldsAreLeftOutNotNull() throws {
        var out: [UInt8] = []
        var record = Self.record(path: nil, wire: .http1_1)
        record.peer = nil
        record.status = 400
        AccessLogLine.append(record, to: &out)
        let line = try Self.parse(out)
        #expect(Set(line.keys) == ["time", "protocol", "status", "bytes_in", "bytes_out", "duration_us"])
        #expect(line["protocol"] as? String == "http/1.1")
    }

    @Test func wireStringsAreEscaped() throws {
        let hostile = "we\"ird\\name\u{01}\n\t\u{7f}é/\u{2028}"
        var notes = RequestNotes.Values()
        notes.model = hostile
        notes.version = "\"1\""
        var out: [UInt8] = []
        AccessLogLine.append(Self.record(path: "/v2/models/" + hostile, wire: .http2, method: "GE\"T", notes: notes), to: &out)
        let line = try Self.parse(out)
        #expect(line["model"] as? String == hostile)
        #expect(line["path"] as? String == "/v2/models/" + hostile)
        #expect(line["method"] as? String == "GE\"T")
        #expect(line["version"] as? String == "\"1\"")
        #expect(line["protocol"] as? String == "h2c")
        #expect(line["status_name"] == nil, "HTTP lines have no gRPC status name")
    }

    @Test(arguments: [
        (AccessRecord.WireProtocol.grpc, true, "grpc+tls"), (.http2, true, "h2"), (.http1_1, true, "http/1.1+tls"),
        (.http1_0, false, "http/1.0"),
    ])
    func protocolNames(wire: AccessRecord.WireProtocol, tls: Bool, name: String) {
        var record = Self.record(wire: wire)
        record.tls = tls
        #expect(record.protocolName == name)
    }

    static func temporaryPath() -> String {
        NSTemporaryDirectory() + "access-log-test-\(UInt64.random(in: 0...UInt64.max)).log"
    }

    @Test func appendsLinesAndReopensAfterARename() async throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "an existing line\n".write(toFile: path, atomically: false, encoding: .utf8)
        let log = try AccessLog(path: path, logger: Logger(label: "test"), factory: NOOPMetricsHandler.instance)
        for _ in 0..<3 { log.record(Self.record()) }
        try await waitFor { (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").count == 4 }
        let rotated = path + ".1"
        defer { try? FileManager.default.removeItem(atPath: rotated) }
        try FileManager.default.moveItem(atPath: path, toPath: rotated)
        try await log.reopen().get()
        log.record(Self.record(path: "/after"))
        await log.close()
        log.record(Self.record(path: "/after-close"))
        let old = try String(contentsOfFile: rotated, encoding: .utf8).split(separator: "\n")
        #expect(old.count == 4 && old[0] == "an existing line", "appended, not truncated")
        let fresh = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(fresh.count == 1 && fresh[0].contains(#""path":"/after""#))
        #expect(log.droppedCount == 0)
    }

    @Test func aPathThatCannotBeOpenedIsRefused() {
        #expect(throws: AccessLogError.self) {
            try AccessLog(path: "/nonexistent-dir/x/access.log", logger: Logger(label: "test"), factory: NOOPMetricsHandler.instance)
        }
    }

    /// A pipe nobody reads: the writer blocks in write(2) while records keep coming; past the
    /// bound they are dropped and counted, and `record` never waits.
    @Test func aWriterThatFallsBehindDropsAndCounts() async throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { _ = Glibc.close(fds[0]); _ = Glibc.close(fds[1]) }
        let log = try AccessLog(path: "/dev/fd/\(fds[1])", maxPendingBytes: 8 << 10, logger: Logger(label: "test"), factory: NOOPMetricsHandler.instance)
        let count = 5000
        let start = ContinuousClock.now
        for _ in 0..<count { log.record(Self.record()) }
        #expect(ContinuousClock.now - start < .seconds(2), "recording does not wait for the writer")
        #expect(log.droppedCount > 0)
        // Now read everything: what was not dropped arrives whole.
        let reader = Task.detached { [fd = fds[0]] in
            var lines = 0
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                lines += buffer[..<n].lazy.filter { $0 == UInt8(ascii: "\n") }.count
            }
            return lines
        }
        await log.close()
        _ = Glibc.close(fds[1])
        fds[1] = -1
        let written = await reader.value
        #expect(written + log.droppedCount == count)
        #expect(written > 0)
    }

    func waitFor(_ condition: () -> Bool) async throws {
        for _ in 0..<200 where !condition() { try await Task.sleep(for: .milliseconds(10)) }
        #expect(condition())
    }
}

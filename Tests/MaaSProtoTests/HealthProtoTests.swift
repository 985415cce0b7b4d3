import MaaSProto
import Testing

@Suite("grpc.health.v1 messages through protobuf-c")
struct HealthProtoTests {
    @Test("request round trip", arguments: ["", "inference.GRPCInferenceService", String(repeating: "s", count: 1000), "caf\u{e9}"])
    func request(service: String) throws {
        let bytes = HealthCheckRequest(service: service).serializedBytes()
        let decoded = try bytes.withUnsafeBytes { try HealthCheckRequest(serializedBytes: $0) }
        #expect(decoded.service == service)
    }

    @Test("wire bytes match the proto3 encoding")
    func wireBytes() {
        #expect(HealthCheckRequest(service: "ab").serializedBytes() == [0x0A, 0x02, 0x61, 0x62])
        #expect(HealthCheckRequest(service: "").serializedBytes() == [])
        #expect(HealthCheckResponse(status: .serving).serializedBytes() == [0x08, 0x01])
        #expect(HealthCheckResponse(status: .unknown).serializedBytes() == [])
    }

    @Test("response round trip", arguments: [HealthCheckResponse.ServingStatus.unknown, .serving, .notServing, .serviceUnknown])
    func response(status: HealthCheckResponse.ServingStatus) throws {
        let bytes = HealthCheckResponse(status: status).serializedBytes()
        #expect(try bytes.withUnsafeBytes { try HealthCheckResponse(serializedBytes: $0) }.status == status)
    }

    @Test("malformed bytes are a decoding error naming the message", arguments: [[0x0A, 0x05, 0x61] as [UInt8], [0x0A], [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]])
    func malformed(bytes: [UInt8]) {
        #expect {
            try bytes.withUnsafeBytes { try HealthCheckRequest(serializedBytes: $0) }
        } throws: { error in
            (error as? ProtobufDecodingError)?.messageName == "grpc.health.v1.HealthCheckRequest"
        }
    }

    @Test("unknown fields are skipped, as proto3 requires")
    func unknownFields() throws {
        // Field 2 (varint 1), then field 1 = "x".
        let decoded = try ([0x10, 0x01, 0x0A, 0x01, 0x78] as [UInt8]).withUnsafeBytes { try HealthCheckRequest(serializedBytes: $0) }
        #expect(decoded.service == "x")
    }
}

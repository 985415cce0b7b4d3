import MaaSCore
@testable import MaaSGRPC
import NIOCore
import Testing

@Suite("Message framing")
struct FramingTests {
    static func framed(_ messages: [[UInt8]]) -> [UInt8] {
        messages.flatMap { message -> [UInt8] in
            let length = UInt32(message.count)
            return [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + message
        }
    }

    static let messages: [[UInt8]] = [[], [1], Array(0..<200), [], Array(repeating: 7, count: 70_000)]

    @Test("deframer reassembles messages split into chunks of any size", arguments: [1, 2, 3, 5, 7, 4096, 1 << 20])
    func deframeInChunks(chunkSize: Int) throws {
        let bytes = Self.framed(Self.messages)
        var deframer = MessageDeframer(maxMessageSize: 1 << 20)
        var received: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + chunkSize, bytes.count)
            try bytes[offset..<end].withUnsafeBytes { chunk in
                try deframer.process(chunk, allocator: ByteBufferAllocator()) { received.append(Array($0.readableBytesView)) }
            }
            offset = end
        }
        #expect(received == Self.messages)
        #expect(!deframer.hasPartialMessage)
        #expect(deframer.bufferedBytes == 0)
    }

    @Test("an oversized length is refused on the prefix, before any body byte")
    func oversizedLength() throws {
        var deframer = MessageDeframer(maxMessageSize: 100)
        let prefix: [UInt8] = [0, 0, 0, 0, 101]
        for byte in prefix.dropLast() {
            try [byte].withUnsafeBytes { try deframer.process($0, allocator: ByteBufferAllocator()) { _ in } }
        }
        #expect(throws: MessageDeframer.Failure.messageTooLarge(length: 101, limit: 100)) {
            try [prefix.last!].withUnsafeBytes { try deframer.process($0, allocator: ByteBufferAllocator()) { _ in } }
        }
        // 0xFFFFFFFF: the largest length a prefix can announce.
        var fresh = MessageDeframer(maxMessageSize: 64 << 20)
        #expect(throws: MessageDeframer.Failure.messageTooLarge(length: Int(UInt32.max), limit: 64 << 20)) {
            try [UInt8(0), 0xFF, 0xFF, 0xFF, 0xFF].withUnsafeBytes { try fresh.process($0, allocator: ByteBufferAllocator()) { _ in } }
        }
    }

    @Test("compression flags", arguments: [(UInt8(1), MessageDeframer.Failure.compressedWithoutEncoding), (2, .invalidCompressionFlag(2)), (0x80, .invalidCompressionFlag(0x80))])
    func compressionFlag(flag: UInt8, failure: MessageDeframer.Failure) {
        var deframer = MessageDeframer(maxMessageSize: 100)
        #expect(throws: failure) {
            try [flag, 0, 0, 0, 1, 9].withUnsafeBytes { try deframer.process($0, allocator: ByteBufferAllocator()) { _ in } }
        }
    }

    @Test("failures map to the gRPC status the spec asks for")
    func failureStatus() {
        #expect(MessageDeframer.Failure.messageTooLarge(length: 2, limit: 1).rpcError.code == .resourceExhausted)
        #expect(MessageDeframer.Failure.compressedWithoutEncoding.rpcError.code == .internal)
        #expect(MessageDeframer.Failure.invalidCompressionFlag(3).rpcError.code == .internal)
    }

    @Test("outbound queue frames messages into buffers of any size", arguments: [1, 3, 5, 6, 16384])
    func outboundCopy(bufferSize: Int) {
        var queue = OutboundMessages()
        for message in Self.messages { queue.append(ByteBuffer(bytes: message)) }
        let expected = Self.framed(Self.messages)
        #expect(queue.byteCount == expected.count)
        var out: [UInt8] = []
        var scratch = [UInt8](repeating: 0, count: bufferSize)
        while !queue.isEmpty {
            let count = scratch.withUnsafeMutableBytes { queue.copy(into: $0) }
            #expect(count > 0)
            out += scratch[0..<count]
        }
        #expect(out == expected)
        #expect(queue.byteCount == 0)
    }
}

@Suite("grpc-timeout")
struct TimeoutTests {
    @Test("valid values", arguments: [
        ("1n", Int64(1)), ("1u", 1_000), ("100m", 100_000_000), ("5S", 5_000_000_000), ("2M", 120_000_000_000),
        ("1H", 3_600_000_000_000), ("99999999n", 99_999_999), ("0S", 0),
    ])
    func parse(value: String, nanos: Int64) {
        #expect(GRPCTimeout.parse(value.utf8) == nanos)
    }

    @Test("invalid values", arguments: ["", "1", "S", "123456789S", "1.5S", "-1S", "1s", "1Sx", "abcS", "1 S"])
    func invalid(value: String) {
        #expect(GRPCTimeout.parse(value.utf8) == nil)
    }

    @Test("huge values saturate instead of overflowing")
    func saturate() {
        #expect(GRPCTimeout.parse("99999999H".utf8) == Int64.max)
    }

    @Test("encoding picks a unit that fits in 8 digits and never shortens", arguments: [
        Int64(1), 999, 1_000_001, 5_000_000_000, 99_999_999_999, 86_400_000_000_000, Int64.max,
    ])
    func encode(nanos: Int64) {
        let encoded = GRPCTimeout.encode(nanoseconds: nanos)
        let parsed = GRPCTimeout.parse(encoded.utf8)
        #expect(parsed != nil)
        #expect(encoded.count <= 9)
        #expect(parsed! >= nanos)
    }
}

@Suite("grpc-message percent-encoding and metadata")
struct EncodingTests {
    @Test("round trips", arguments: ["plain", "100%", "tab\tand\nnewline", "caf\u{e9} \u{2717}", "", "%%%"])
    func roundTrip(message: String) {
        let encoded = PercentEncoding.encode(message)
        #expect(encoded.utf8.allSatisfy { $0 >= 0x20 && $0 <= 0x7E })
        #expect(PercentEncoding.decode(encoded) == message)
    }

    @Test("malformed escapes are kept as they are")
    func malformed() {
        #expect(PercentEncoding.decode("50%") == "50%")
        #expect(PercentEncoding.decode("%zz") == "%zz")
        #expect(PercentEncoding.decode("%4") == "%4")
        #expect(PercentEncoding.decode("%41") == "A")
    }

    @Test("-bin values: padded, unpadded, several per header; invalid base64 refused")
    func binaryMetadata() {
        var metadata = Metadata()
        let addeda = metadata.addWireHeader(name: "a-bin", value: "AAEC/w==")
        #expect(addeda)
        let addedb = metadata.addWireHeader(name: "b-bin", value: "AAEC/w")
        #expect(addedb)
        let addedc = metadata.addWireHeader(name: "c-bin", value: "AQ,Ag==")
        #expect(addedc)
        #expect(metadata.binary("a-bin") == [0, 1, 2, 255])
        #expect(metadata.binary("b-bin") == [0, 1, 2, 255])
        #expect(metadata.values("c-bin") == [.binary([1]), .binary([2])])
        let addedInvalid = metadata.addWireHeader(name: "d-bin", value: "!!")
        #expect(!addedInvalid)
        let wire = Metadata(dictionaryLiteral: ("x", "y")).wireHeaders
        #expect(wire.count == 1 && wire[0] == ("x", "y"))
        var binary = Metadata()
        binary.add("k-bin", binary: [0, 1, 2, 255])
        #expect(binary.wireHeaders[0].value == "AAEC/w")
    }

    @Test("protocol headers never count as custom metadata", arguments: [":path", "content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-status"])
    func reserved(name: String) {
        #expect(Metadata.isReserved(name))
    }
}

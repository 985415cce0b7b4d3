import MaaSCore
import NIOCore

/// Reassembles gRPC length-prefixed messages (1 flag byte, 4-byte big-endian length, body)
/// from DATA payloads split at any byte.
///
/// The length is checked against the limit before any of the body is buffered, so a peer
/// cannot make us allocate more than `maxMessageSize` by announcing a large message.
struct MessageDeframer {
    enum Failure: Error, Equatable {
        case messageTooLarge(length: Int, limit: Int)
        case compressedWithoutEncoding
        case invalidCompressionFlag(UInt8)

        var rpcError: RPCError {
            switch self {
            case .messageTooLarge(let length, let limit):
                RPCError(
                    .resourceExhausted,
                    "received message larger than max (\(length) vs. \(limit) bytes)"
                )
            case .compressedWithoutEncoding:
                RPCError(
                    .internal,
                    "message has the compressed flag set but the call uses no compression (grpc-encoding absent or identity)"
                )
            case .invalidCompressionFlag(let flag):
                RPCError(.internal, "invalid message compression flag \(flag) (expected 0 or 1)")
            }
        }
    }

    let maxMessageSize: Int
    private var header: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
    private var headerCount = 0
    private var body: ByteBuffer?
    private var bodyRemaining = 0

    init(maxMessageSize: Int) {
        self.maxMessageSize = maxMessageSize
    }

    /// Whether a message has been started but not finished.
    var hasPartialMessage: Bool { headerCount > 0 }

    /// Bytes held for the message in progress.
    var bufferedBytes: Int { headerCount + (body?.readableBytes ?? 0) }

    /// Consumes `bytes`, calling `onMessage` for every message completed by them.
    mutating func process(
        _ bytes: UnsafeRawBufferPointer,
        allocator: ByteBufferAllocator,
        onMessage: (ByteBuffer) -> Void
    ) throws(Failure) {
        var offset = 0
        let count = bytes.count
        while offset < count {
            if headerCount < 5 {
                let byte = bytes[offset]
                offset += 1
                switch headerCount {
                case 0: header.0 = byte
                case 1: header.1 = byte
                case 2: header.2 = byte
                case 3: header.3 = byte
                default: header.4 = byte
                }
                headerCount += 1
                if headerCount == 5 {
                    try startBody(allocator: allocator)
                    if bodyRemaining == 0 { finishMessage(onMessage) }
                }
                continue
            }
            let take = min(bodyRemaining, count - offset)
            body!.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + take]))
            offset += take
            bodyRemaining -= take
            if bodyRemaining == 0 { finishMessage(onMessage) }
        }
    }

    private mutating func startBody(allocator: ByteBufferAllocator) throws(Failure) {
        switch header.0 {
        case 0: break
        case 1: throw .compressedWithoutEncoding
        default: throw .invalidCompressionFlag(header.0)
        }
        let length = Int(header.1) << 24 | Int(header.2) << 16 | Int(header.3) << 8 | Int(header.4)
        guard length <= maxMessageSize else {
            throw .messageTooLarge(length: length, limit: maxMessageSize)
        }
        bodyRemaining = length
        // Large messages arrive over many frames: grow with what arrives rather than trusting
        // the prefix for the whole allocation up front.
        body = allocator.buffer(capacity: min(length, 1 << 20))
    }

    private mutating func finishMessage(_ onMessage: (ByteBuffer) -> Void) {
        let message = body!
        body = nil
        headerCount = 0
        onMessage(message)
    }
}

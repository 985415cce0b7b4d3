import NIOCore

/// Messages queued on one stream until HTTP/2 flow control lets nghttp2 take them. Each
/// message's 5-byte gRPC prefix is written while copying, so messages are never copied just to
/// be framed.
struct OutboundMessages {
    private var queue = CircularBuffer<ByteBuffer>(initialCapacity: 2)
    private var prefixOffset = 0
    /// Bytes still to go, prefixes included.
    private(set) var byteCount = 0
    /// False for a plain HTTP response body, which goes as it is.
    var framesMessages = true
    private var prefixLength: Int { framesMessages ? 5 : 0 }

    var isEmpty: Bool { queue.isEmpty }

    mutating func append(_ message: ByteBuffer) {
        queue.append(message)
        byteCount += message.readableBytes + prefixLength
    }

    /// Copies as much as fits into `target`; returns the number of bytes written.
    mutating func copy(into target: UnsafeMutableRawBufferPointer) -> Int {
        var written = 0
        while written < target.count, !queue.isEmpty {
            let index = queue.startIndex
            if prefixOffset < prefixLength {
                let length = UInt32(truncatingIfNeeded: queue[index].readableBytes)
                while prefixOffset < 5, written < target.count {
                    // Byte 0 is the compression flag (never set); bytes 1-4 the big-endian length.
                    target[written] = prefixOffset == 0 ? 0 : UInt8(truncatingIfNeeded: length >> (8 * (4 - prefixOffset)))
                    written += 1
                    prefixOffset += 1
                }
                if prefixOffset < 5 { break }
            }
            let take = min(queue[index].readableBytes, target.count - written)
            if take > 0 {
                queue[index].withUnsafeReadableBytes { source in
                    UnsafeMutableRawBufferPointer(rebasing: target[written..<written + take])
                        .copyMemory(from: UnsafeRawBufferPointer(rebasing: source[0..<take]))
                }
                queue[index].moveReaderIndex(forwardBy: take)
                written += take
            }
            if queue[index].readableBytes == 0 {
                queue.removeFirst()
                prefixOffset = 0
            }
        }
        byteCount -= written
        return written
    }

    mutating func removeAll() {
        queue.removeAll()
        byteCount = 0
        prefixOffset = 0
    }
}

internal import CProtobufC

/// Memory for building protobuf-c messages from Swift values: everything allocated here lives
/// until `free()`, after the message has been packed.
///
/// Allocations are carved from one block (a response's dozen small structs and strings cost one
/// malloc instead of a dozen); what does not fit gets its own allocation.
///
/// - Important: Swift may release an object after its last use, not at the end of its scope, so
///   every user writes `defer { withExtendedLifetime(arena) {} }`: the message built in it points
///   into the arena until it has been packed.
final class CArena {
    private static let blockSize = 2048
    private let block = UnsafeMutableRawPointer.allocate(byteCount: CArena.blockSize, alignment: 16)
    private var used = 0
    private var allocations: [UnsafeMutableRawPointer] = []

    func string(_ value: String) -> UnsafeMutablePointer<CChar> {
        var value = value
        return value.withUTF8 { utf8 in
            let pointer = allocate(CChar.self, count: utf8.count + 1)
            if let base = utf8.baseAddress {
                UnsafeMutableRawPointer(pointer).copyMemory(from: base, byteCount: utf8.count)
            }
            pointer[utf8.count] = 0
            return pointer
        }
    }

    func allocate<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let bytes = max(count, 1) * MemoryLayout<T>.stride
        let start = (used + 15) & ~15
        if MemoryLayout<T>.alignment <= 16, start + bytes <= Self.blockSize {
            used = start + bytes
            return (block + start).bindMemory(to: T.self, capacity: max(count, 1))
        }
        let pointer = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        allocations.append(UnsafeMutableRawPointer(pointer))
        return pointer
    }

    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T> {
        let pointer = allocate(T.self, count: values.count)
        pointer.initialize(from: values, count: values.count)
        return pointer
    }

    func free() {
        for pointer in allocations { pointer.deallocate() }
        allocations.removeAll()
        used = 0
    }

    deinit {
        free()
        block.deallocate()
    }
}

/// Packs a protobuf-c message into bytes.
func packMessage(_ message: UnsafePointer<ProtobufCMessage>) -> [UInt8] {
    let size = protobuf_c_message_get_packed_size(message)
    return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
        count = protobuf_c_message_pack(message, buffer.baseAddress)
    }
}

internal import CProtobufC

/// Memory for building protobuf-c messages from Swift values: everything allocated here lives
/// until `free()`, after the message has been packed.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    func string(_ value: String) -> UnsafeMutablePointer<CChar> {
        let bytes = Array(value.utf8CString)
        let pointer = allocate(CChar.self, count: bytes.count)
        pointer.initialize(from: bytes, count: bytes.count)
        return pointer
    }

    func allocate<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
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
    }

    deinit { free() }
}

/// Packs a protobuf-c message into bytes.
func packMessage(_ message: UnsafePointer<ProtobufCMessage>) -> [UInt8] {
    let size = protobuf_c_message_get_packed_size(message)
    return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
        count = protobuf_c_message_pack(message, buffer.baseAddress)
    }
}

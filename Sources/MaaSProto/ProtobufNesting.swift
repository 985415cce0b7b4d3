internal import CProtobufC

/// How deeply messages nest in serialized protobuf, read from the wire with protobuf-c's
/// descriptors and an explicit stack, before protobuf-c's unpack (which recurses once per nested
/// message, on the caller's stack) is trusted with the bytes.
///
/// ONNX's schema is recursive (GraphProto → NodeProto → AttributeProto.g → GraphProto): a 30 KB
/// model.onnx of 3,000 nested graphs overflowed the loader's stack inside
/// `onnx__model_proto__unpack` (found while writing the onnx fuzz harness; a regression test in
/// `ONNXModelTests`).
enum ProtobufNesting {
    /// protobuf's own default recursion limit (C++ `CodedInputStream`, Java `setRecursionLimit`).
    /// An ONNX model nests 8 deep (ModelProto → … → TensorShapeProto.Dimension), 3 more per subgraph.
    static let maxDepth = 100

    enum Verdict: Equatable {
        case within
        /// Nesting passed `maxDepth` at this byte offset.
        case tooDeep(offset: Int)
        /// The framing is broken at this byte offset (a truncated varint, a length past its
        /// message's end, a group or an unknown wire type); protobuf-c refuses such bytes too.
        case malformed(offset: Int)
    }

    static func check(
        _ bytes: UnsafeRawBufferPointer, _ descriptor: UnsafePointer<ProtobufCMessageDescriptor>, limit: Int = maxDepth
    ) -> Verdict {
        // (end of the message's bytes, its descriptor), outermost first.
        var stack: [(end: Int, descriptor: UnsafePointer<ProtobufCMessageDescriptor>)] = [(bytes.count, descriptor)]
        var position = 0
        while let (end, message) = stack.last {
            if position == end {
                stack.removeLast()
                continue
            }
            let start = position
            guard let key = varint(bytes, &position, end) else { return .malformed(offset: start) }
            switch key & 7 {
            case 0:
                guard varint(bytes, &position, end) != nil else { return .malformed(offset: start) }
            case 1, 5:
                let size = key & 7 == 1 ? 8 : 4
                guard end - position >= size else { return .malformed(offset: start) }
                position += size
            case 2:
                guard let length = varint(bytes, &position, end), length <= UInt64(end - position) else {
                    return .malformed(offset: start)
                }
                let fieldEnd = position + Int(length)
                let number = key >> 3
                if number <= UInt64(UInt32.max), let field = protobuf_c_message_descriptor_get_field(message, UInt32(number)),
                    field.pointee.type == PROTOBUF_C_TYPE_MESSAGE, let nested = field.pointee.descriptor
                {
                    guard stack.count < limit else { return .tooDeep(offset: start) }
                    stack.append((fieldEnd, nested.assumingMemoryBound(to: ProtobufCMessageDescriptor.self)))
                } else {
                    position = fieldEnd
                }
            default:
                // Groups (3, 4), which proto3 and protobuf-c do not read, and wire types 6 and 7.
                return .malformed(offset: start)
            }
        }
        return .within
    }

    /// A base-128 varint of at most 10 bytes before `end`, or nil.
    private static func varint(_ bytes: UnsafeRawBufferPointer, _ position: inout Int, _ end: Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while position < end, shift < 70 {
            let byte = bytes[position]
            position += 1
            value |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}

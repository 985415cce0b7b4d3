/// Element types of tensors, with their ONNX codes and KServe names.
public enum DataType: Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case float32, float64, float16, bfloat16
    case int8, int16, int32, int64
    case uint8, uint16, uint32, uint64
    case bool, string

    /// `TensorProto.DataType` value.
    public var onnxCode: Int32 {
        switch self {
        case .float32: 1
        case .uint8: 2
        case .int8: 3
        case .uint16: 4
        case .int16: 5
        case .int32: 6
        case .int64: 7
        case .string: 8
        case .bool: 9
        case .float16: 10
        case .float64: 11
        case .uint32: 12
        case .uint64: 13
        case .bfloat16: 16
        }
    }

    public init?(onnxCode: Int32) {
        guard let type = DataType.allCases.first(where: { $0.onnxCode == onnxCode }) else { return nil }
        self = type
    }

    /// The KServe v2 / Triton datatype name, e.g. `FP32`.
    public var kserveName: String {
        switch self {
        case .float32: "FP32"
        case .float64: "FP64"
        case .float16: "FP16"
        case .bfloat16: "BF16"
        case .int8: "INT8"
        case .int16: "INT16"
        case .int32: "INT32"
        case .int64: "INT64"
        case .uint8: "UINT8"
        case .uint16: "UINT16"
        case .uint32: "UINT32"
        case .uint64: "UINT64"
        case .bool: "BOOL"
        case .string: "BYTES"
        }
    }

    public init?(kserveName: String) {
        guard let type = DataType.allCases.first(where: { $0.kserveName == kserveName }) else { return nil }
        self = type
    }

    /// Bytes per element; nil for strings, which have no fixed size.
    public var byteSize: Int? {
        switch self {
        case .float32, .int32, .uint32: 4
        case .float64, .int64, .uint64: 8
        case .float16, .bfloat16, .int16, .uint16: 2
        case .int8, .uint8, .bool: 1
        case .string: nil
        }
    }

    public var description: String {
        switch self {
        case .float32: "float32"
        case .float64: "float64"
        case .float16: "float16"
        case .bfloat16: "bfloat16"
        case .int8: "int8"
        case .int16: "int16"
        case .int32: "int32"
        case .int64: "int64"
        case .uint8: "uint8"
        case .uint16: "uint16"
        case .uint32: "uint32"
        case .uint64: "uint64"
        case .bool: "bool"
        case .string: "string"
        }
    }
}

/// The KServe v2 inference messages as Swift values, independent of protobuf.

/// A request or tensor parameter (`InferParameter`).
public enum InferParameter: Sendable, Hashable {
    case bool(Bool)
    case int64(Int64)
    case string(String)
    case double(Double)
    case uint64(UInt64)
}

/// Values sent in a tensor's typed `contents` field instead of `raw_input_contents`.
public enum TypedContents: Sendable {
    case bool([Bool])
    case int32([Int32])
    case int64([Int64])
    case uint32([UInt32])
    case uint64([UInt64])
    case fp32([Float])
    case fp64([Double])
    case bytes([[UInt8]])

    public var count: Int {
        switch self {
        case .bool(let v): v.count
        case .int32(let v): v.count
        case .int64(let v): v.count
        case .uint32(let v): v.count
        case .uint64(let v): v.count
        case .fp32(let v): v.count
        case .fp64(let v): v.count
        case .bytes(let v): v.count
        }
    }

    /// These values as a tensor of `type` and `shape`, the way KServe maps datatypes to fields
    /// (INT8/INT16 travel in `int_contents`, UINT8/UINT16 in `uint_contents`, narrowed here);
    /// nil when this field does not carry `type`. The caller checks ``count`` against the shape.
    public func tensor(_ type: DataType, shape: [Int]) throws(InferenceError) -> Tensor? {
        func build<T>(_ values: [T]) throws(InferenceError) -> Tensor {
            try values.withUnsafeBufferPointer { buffer throws(InferenceError) in
                try Tensor(dataType: type, shape: shape, bytes: UnsafeRawBufferPointer(buffer))
            }
        }
        switch (self, type) {
        case (.fp32(let values), .float32): return try build(values)
        case (.fp64(let values), .float64): return try build(values)
        case (.int64(let values), .int64): return try build(values)
        case (.int32(let values), .int32): return try build(values)
        case (.int32(let values), .int16): return try build(values.map { Int16(truncatingIfNeeded: $0) })
        case (.int32(let values), .int8): return try build(values.map { Int8(truncatingIfNeeded: $0) })
        case (.uint64(let values), .uint64): return try build(values)
        case (.uint32(let values), .uint32): return try build(values)
        case (.uint32(let values), .uint16): return try build(values.map { UInt16(truncatingIfNeeded: $0) })
        case (.uint32(let values), .uint8): return try build(values.map { UInt8(truncatingIfNeeded: $0) })
        case (.bool(let values), .bool): return try build(values.map { UInt8($0 ? 1 : 0) })
        default: return nil
        }
    }

    /// The `contents` field name, for error messages.
    public var fieldName: String {
        switch self {
        case .bool: "bool_contents"
        case .int32: "int_contents"
        case .int64: "int64_contents"
        case .uint32: "uint_contents"
        case .uint64: "uint64_contents"
        case .fp32: "fp32_contents"
        case .fp64: "fp64_contents"
        case .bytes: "bytes_contents"
        }
    }
}

/// One input of a ModelInfer request, as sent (not yet checked against the model).
public struct InferInput: Sendable {
    public var name: String
    /// KServe datatype name, e.g. `FP32`.
    public var datatype: String
    public var shape: [Int64]
    public var parameters: [String: InferParameter]
    public var contents: TypedContents?

    public init(name: String, datatype: String, shape: [Int64], parameters: [String: InferParameter] = [:], contents: TypedContents? = nil) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.parameters = parameters
        self.contents = contents
    }
}

/// A ModelInfer request, as sent.
public struct InferenceRequest: Sendable {
    public var modelName: String
    public var modelVersion: String
    public var id: String
    public var parameters: [String: InferParameter]
    public var inputs: [InferInput]
    /// Requested output names; empty means all outputs.
    public var outputs: [String]
    /// One entry per input, in order, when inputs are sent raw.
    public var rawInputContents: [[UInt8]]

    public init(
        modelName: String, modelVersion: String = "", id: String = "", parameters: [String: InferParameter] = [:],
        inputs: [InferInput], outputs: [String] = [], rawInputContents: [[UInt8]] = []
    ) {
        self.modelName = modelName
        self.modelVersion = modelVersion
        self.id = id
        self.parameters = parameters
        self.inputs = inputs
        self.outputs = outputs
        self.rawInputContents = rawInputContents
    }
}

/// A ModelInfer response: outputs go back in `raw_output_contents`.
public struct InferenceResponse: Sendable {
    public var modelName: String
    public var modelVersion: String
    public var id: String
    public var outputs: [(name: String, tensor: Tensor)]

    public init(modelName: String, modelVersion: String, id: String, outputs: [(name: String, tensor: Tensor)]) {
        self.modelName = modelName
        self.modelVersion = modelVersion
        self.id = id
        self.outputs = outputs
    }

    /// The output called `name`, if the response has it.
    public func output(_ name: String) -> Tensor? {
        outputs.first { $0.name == name }?.tensor
    }
}

/// A tensor's name, KServe datatype and shape (-1 for a variable dimension), as metadata reports it.
public struct TensorMetadata: Sendable, Hashable {
    public var name: String
    public var datatype: String
    public var shape: [Int64]

    public init(name: String, datatype: String, shape: [Int64]) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
    }
}

/// A model as the engine sees it, independent of the file format it came from: the ONNX
/// `ModelProto` fields the engine uses, with every tensor already materialized.
public struct ModelGraph: Sendable {
    public var name: String
    public var producer: String
    /// Operator set version by domain ("" is the default ONNX domain).
    public var opsets: [String: Int]
    public var inputs: [ValueInfo]
    public var outputs: [ValueInfo]
    public var initializers: [String: Tensor]
    public var nodes: [Node]
    /// `metadata_props`, e.g. training metadata.
    public var metadata: [String: String]

    public init(
        name: String = "", producer: String = "", opsets: [String: Int] = ["": 17],
        inputs: [ValueInfo], outputs: [ValueInfo], initializers: [String: Tensor] = [:],
        nodes: [Node], metadata: [String: String] = [:]
    ) {
        self.name = name
        self.producer = producer
        self.opsets = opsets
        self.inputs = inputs
        self.outputs = outputs
        self.initializers = initializers
        self.nodes = nodes
        self.metadata = metadata
    }

    /// The opset a node runs under.
    public func opset(for domain: String) -> Int? {
        opsets[domain == "ai.onnx" ? "" : domain]
    }
}

/// A graph input or output: name, element type and shape, where a dimension may be symbolic.
public struct ValueInfo: Sendable, Hashable {
    public enum Dimension: Sendable, Hashable, CustomStringConvertible {
        case fixed(Int)
        /// Unknown until run time (`dim_param`, or absent in the file).
        case symbolic(String)

        public var description: String {
            switch self {
            case .fixed(let value): "\(value)"
            case .symbolic(let name): name.isEmpty ? "?" : name
            }
        }
    }

    public var name: String
    public var dataType: DataType
    public var shape: [Dimension]

    public init(name: String, dataType: DataType, shape: [Dimension]) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
    }
}

/// One operator invocation.
public struct Node: Sendable {
    public var name: String
    public var opType: String
    public var domain: String
    /// Value names; an empty string is an omitted optional input.
    public var inputs: [String]
    public var outputs: [String]
    public var attributes: [String: Attribute]

    public init(
        name: String = "", opType: String, domain: String = "", inputs: [String], outputs: [String],
        attributes: [String: Attribute] = [:]
    ) {
        self.name = name
        self.opType = opType
        self.domain = domain
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }

    /// How errors name this node: `Gemm node '/0/Gemm'`.
    public var label: String {
        name.isEmpty ? "\(opType) node producing '\(outputs.first ?? "?")'" : "\(opType) node '\(name)'"
    }
}

/// An attribute value.
public enum Attribute: Sendable {
    case float(Float)
    case int(Int)
    case string(String)
    case tensor(Tensor)
    case floats([Float])
    case ints([Int])
    case strings([String])
    /// Kinds the engine does not use (graphs, sparse tensors, type protos); kept so that an op
    /// can say what it got.
    case unsupported(String)
}

/// What the server knows about a model, in the shape of Triton's ModelConfig (the fields we
/// support): read from `config.json`, completed from the ONNX graph, reported by ModelConfig.
public struct ModelConfig: Sendable, Hashable {
    public struct Tensor: Sendable, Hashable {
        public var name: String
        public var dataType: DataType
        /// Dimensions without the batch dimension when `maxBatchSize > 0`; -1 is variable.
        public var dims: [Int64]

        public init(name: String, dataType: DataType, dims: [Int64]) {
            self.name = name
            self.dataType = dataType
            self.dims = dims
        }
    }

    public struct QueuePolicy: Sendable, Hashable {
        public enum TimeoutAction: Int32, Sendable { case reject = 0, delay = 1 }
        public var timeoutAction: TimeoutAction = .reject
        public var defaultTimeoutMicroseconds: UInt64 = 0
        public var allowTimeoutOverride = false
        /// 0 means unbounded in Triton; we cap it anyway (see the batcher).
        public var maxQueueSize: UInt32 = 0

        public init() {}
    }

    public struct DynamicBatching: Sendable, Hashable {
        public var preferredBatchSizes: [Int] = []
        public var maxQueueDelayMicroseconds: UInt64 = 0
        public var preserveOrdering = false
        public var defaultQueuePolicy: QueuePolicy?

        public init() {}
    }

    public enum VersionPolicy: Sendable, Hashable {
        case latest(Int)
        case all
        case specific([Int64])
    }

    public var name: String
    public var platform = "onnxruntime_onnx"
    public var backend = "maas"
    public var maxBatchSize = 0
    public var inputs: [Tensor] = []
    public var outputs: [Tensor] = []
    public var dynamicBatching: DynamicBatching?
    public var versionPolicy: VersionPolicy = .latest(1)
    public var instanceCount = 1
    public var defaultModelFilename = "model.onnx"
    /// Triton's free-form `parameters` (string values): from config.json, plus the training
    /// metadata (`training.*`) that `maas train` stores in the model file.
    public var parameters: [String: String] = [:]

    public init(name: String) {
        self.name = name
    }
}

extension DataType {
    /// Triton's model_config.proto `DataType` value (TYPE_FP32 = 11, ...).
    public var modelConfigCode: Int32 {
        switch self {
        case .bool: 1
        case .uint8: 2
        case .uint16: 3
        case .uint32: 4
        case .uint64: 5
        case .int8: 6
        case .int16: 7
        case .int32: 8
        case .int64: 9
        case .float16: 10
        case .float32: 11
        case .float64: 12
        case .string: 13
        case .bfloat16: 14
        }
    }

    public init?(modelConfigCode: Int32) {
        guard let type = DataType.allCases.first(where: { $0.modelConfigCode == modelConfigCode }) else { return nil }
        self = type
    }

    /// The config.json spelling, e.g. `TYPE_FP32`.
    public var modelConfigName: String { "TYPE_" + (self == .string ? "STRING" : kserveName) }

    public init?(modelConfigName: String) {
        guard let type = DataType.allCases.first(where: { $0.modelConfigName == modelConfigName }) else { return nil }
        self = type
    }
}

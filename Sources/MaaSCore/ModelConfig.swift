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

    /// Our extension: requests whose inputs differ in length along axis 1 (the sequence axis,
    /// right after the batch dimension) share a batch, each padded to the longest in it, and the
    /// outputs' axis 1 is trimmed back to each request's own length.
    public struct PaddedBatching: Sendable, Hashable {
        /// The padded inputs and the value each is padded with (a token id, 0 for a mask).
        public var padValues: [String: Double]
        /// Outputs whose axis 1 follows the inputs' length and is trimmed per request; nil until
        /// derived from the graph (outputs whose axis 1 has the padded inputs' symbolic name).
        public var trimmedOutputs: [String]?

        public init(padValues: [String: Double], trimmedOutputs: [String]?) {
            self.padValues = padValues
            self.trimmedOutputs = trimmedOutputs
        }
    }

    /// Our extension: a BYTES input of texts the server tokenizes (WordPiece) in place of the
    /// model's token inputs, and optionally mean-pools and normalises into one embedding per text.
    public struct TextInput: Sendable, Hashable {
        public enum Pooling: String, Sendable, CaseIterable {
            /// The first output averaged over each text's tokens: the `embedding` output.
            case mean
            /// The model's own outputs.
            case none
        }

        public var name = "text"
        /// The tokenizer.json file, in the version folder.
        public var tokenizer: String
        /// Tokens per text, [CLS] and [SEP] included; longer texts are truncated.
        public var maxLength = 256
        public var pooling = Pooling.mean
        /// L2-normalise the pooled embedding.
        public var normalize = true
        /// The pooled output's name.
        public static let embeddingOutput = "embedding"

        public init(tokenizer: String) {
            self.tokenizer = tokenizer
        }
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
    /// nil with `paddedBatchingDisabled` false: derived from the inputs' names when they are
    /// Hugging Face's (input_ids, attention_mask, token_type_ids).
    public var paddedBatching: PaddedBatching?
    /// `"padded_batching": false` in config.json: no padded batching, even where it would be derived.
    public var paddedBatchingDisabled = false
    public var textInput: TextInput?
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

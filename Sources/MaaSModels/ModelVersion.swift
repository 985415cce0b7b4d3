import Glibc
import CoreMetrics
public import MaaSCompute
public import MaaSCore

/// One loaded version of a model: its configuration, compiled graph and batcher.
public final class ModelVersion: Sendable {
    public let name: String
    public let version: Int64
    public let config: ModelConfig
    /// The outputs' names in the config's order (kept, not mapped per response).
    public let outputNames: [String]
    public let compiled: CompiledModel
    public let batcher: DynamicBatcher
    /// Tokenizer and pooling, for a model that takes text (config.json's `text_input`).
    public let text: TextPipeline?
    /// When this version was loaded, in seconds since 1970 (OpenAI's `created`).
    public let loadedAt = Int64(time(nil))

    init(
        name: String, version: Int64, config: ModelConfig, compiled: CompiledModel, text: TextPipeline? = nil, clock: any BatchingClock,
        metrics: any MetricsFactory = MetricsSystem.factory
    ) {
        self.text = text
        self.name = name
        self.version = version
        self.config = config
        self.outputNames = config.outputs.map(\.name)
        self.compiled = compiled
        self.batcher = DynamicBatcher(
            model: compiled, config: config, label: "\(name):\(version)",
            statistics: ModelStatistics(model: name, version: version, factory: metrics), clock: clock)
    }

    /// Inputs and outputs as ModelMetadata reports them (batch dimension included as -1).
    public var inputMetadata: [TensorMetadata] { config.inputs.map(metadata) }
    public var outputMetadata: [TensorMetadata] { config.outputs.map(metadata) }

    private func metadata(_ tensor: ModelConfig.Tensor) -> TensorMetadata {
        TensorMetadata(name: tensor.name, datatype: tensor.dataType.kserveName, shape: (config.maxBatchSize > 0 ? [-1] : []) + tensor.dims)
    }
}

extension ModelConfig {
    /// Completes a configuration from the ONNX graph: inputs and outputs with their types and
    /// shapes, and batching when every input's first dimension is dynamic.
    public static func derived(name: String, graph: ModelGraph, declared: ModelConfig?) -> ModelConfig {
        var config = declared ?? ModelConfig(name: name)
        config.name = name
        let batchable = !graph.inputs.isEmpty && graph.inputs.allSatisfy { input in
            if case .symbolic = input.shape.first { return true }
            return false
        }
        if declared == nil {
            config.maxBatchSize = batchable ? 64 : 0
            if batchable {
                var batching = DynamicBatching()
                batching.maxQueueDelayMicroseconds = 100
                config.dynamicBatching = batching
            }
        }
        func dims(_ info: ValueInfo) -> [Int64] {
            let all = info.shape.map { dimension -> Int64 in
                if case .fixed(let value) = dimension { return Int64(value) }
                return -1
            }
            return config.maxBatchSize > 0 ? Array(all.dropFirst()) : all
        }
        for (key, value) in graph.metadata where key.hasPrefix("training.") && config.parameters[key] == nil {
            config.parameters[key] = value
        }
        if config.inputs.isEmpty {
            config.inputs = graph.inputs.map { ModelConfig.Tensor(name: $0.name, dataType: $0.dataType, dims: dims($0)) }
        }
        if config.outputs.isEmpty {
            config.outputs = graph.outputs.map { ModelConfig.Tensor(name: $0.name, dataType: $0.dataType, dims: dims($0)) }
        }
        config.completeSequenceFields(from: graph)
        return config
    }
}

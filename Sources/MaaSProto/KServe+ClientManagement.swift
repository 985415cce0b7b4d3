internal import CMaaSProto
internal import CProtobufC
public import MaaSCore

/// The client side of the metadata, configuration, repository and statistics messages:
/// requests out, responses in (what `maas models` and `maas infer` ask a server).
extension KServe {
    /// A ModelMetadataResponse.
    public struct ModelMetadata: Sendable, Hashable {
        public var name: String
        public var versions: [String]
        public var platform: String
        public var inputs: [TensorMetadata]
        public var outputs: [TensorMetadata]

        public init(name: String, versions: [String], platform: String, inputs: [TensorMetadata], outputs: [TensorMetadata]) {
            (self.name, self.versions, self.platform, self.inputs, self.outputs) = (name, versions, platform, inputs, outputs)
        }
    }

    public static func decodeModelMetadata(_ bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) -> ModelMetadata {
        guard let response = inference__model_metadata_response__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.ModelMetadataResponse", byteCount: bytes.count)
        }
        defer { inference__model_metadata_response__free_unpacked(response, nil) }
        let r = response.pointee
        func tensors(_ list: UnsafeMutablePointer<UnsafeMutablePointer<Inference__ModelMetadataResponse__TensorMetadata>?>?, _ count: Int) -> [TensorMetadata] {
            (0..<count).compactMap { index in
                guard let t = list?[index]?.pointee else { return nil }
                return TensorMetadata(
                    name: String(cString: t.name), datatype: String(cString: t.datatype),
                    shape: Array(UnsafeBufferPointer(start: t.shape, count: t.n_shape)))
            }
        }
        return ModelMetadata(
            name: String(cString: r.name), versions: strings(r.versions, r.n_versions), platform: String(cString: r.platform),
            inputs: tensors(r.inputs, r.n_inputs), outputs: tensors(r.outputs, r.n_outputs))
    }

    /// A ModelConfigResponse, as far as ``ModelConfig`` holds it (name, platform, backend,
    /// max_batch_size, inputs, outputs, version policy, instance count, dynamic batching,
    /// parameters). Tensors of a datatype this build does not know are reported as BYTES.
    public static func decodeModelConfig(_ bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) -> ModelConfig {
        guard let response = inference__model_config_response__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.ModelConfigResponse", byteCount: bytes.count)
        }
        defer { inference__model_config_response__free_unpacked(response, nil) }
        guard let c = response.pointee.config?.pointee else { return ModelConfig(name: "") }
        var config = ModelConfig(name: String(cString: c.name))
        config.platform = String(cString: c.platform)
        config.backend = String(cString: c.backend)
        config.maxBatchSize = Int(c.max_batch_size)
        config.defaultModelFilename = String(cString: c.default_model_filename)
        func type(_ value: Inference__DataType) -> DataType { DataType(modelConfigCode: Int32(bitPattern: value.rawValue)) ?? .string }
        config.inputs = (0..<c.n_input).compactMap { index in
            guard let t = c.input[index]?.pointee else { return nil }
            return ModelConfig.Tensor(name: String(cString: t.name), dataType: type(t.data_type), dims: Array(UnsafeBufferPointer(start: t.dims, count: t.n_dims)))
        }
        config.outputs = (0..<c.n_output).compactMap { index in
            guard let t = c.output[index]?.pointee else { return nil }
            return ModelConfig.Tensor(name: String(cString: t.name), dataType: type(t.data_type), dims: Array(UnsafeBufferPointer(start: t.dims, count: t.n_dims)))
        }
        if c.n_instance_group > 0, let group = c.instance_group[0]?.pointee { config.instanceCount = Int(group.count) }
        if let policy = c.version_policy?.pointee {
            switch policy.policy_choice_case {
            case INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_ALL: config.versionPolicy = .all
            case INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_SPECIFIC:
                if let specific = policy.specific?.pointee {
                    config.versionPolicy = .specific(Array(UnsafeBufferPointer(start: specific.versions, count: specific.n_versions)))
                }
            case INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST:
                config.versionPolicy = .latest(Int(policy.latest?.pointee.num_versions ?? 1))
            default: break
            }
        }
        if c.scheduling_choice_case == INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING, let d = c.dynamic_batching?.pointee {
            var batching = ModelConfig.DynamicBatching()
            batching.preferredBatchSizes = UnsafeBufferPointer(start: d.preferred_batch_size, count: d.n_preferred_batch_size).map { Int($0) }
            batching.maxQueueDelayMicroseconds = d.max_queue_delay_microseconds
            batching.preserveOrdering = d.preserve_ordering != 0
            config.dynamicBatching = batching
        }
        for index in 0..<c.n_parameters {
            guard let entry = c.parameters[index]?.pointee else { continue }
            config.parameters[String(cString: entry.key)] = entry.value.map { String(cString: $0.pointee.string_value) } ?? ""
        }
        return config
    }

    /// A RepositoryIndexRequest for the (only) repository; `readyOnly` asks for ready models only.
    public static func encodeIndexRequest(readyOnly: Bool) -> [UInt8] {
        var request = Inference__RepositoryIndexRequest()
        inference__repository_index_request__init(&request)
        request.ready = readyOnly ? 1 : 0
        return withUnsafePointer(to: &request.base) { packMessage($0) }
    }

    public static func decodeIndex(_ bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) -> [ModelIndexEntry] {
        guard let response = inference__repository_index_response__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.RepositoryIndexResponse", byteCount: bytes.count)
        }
        defer { inference__repository_index_response__free_unpacked(response, nil) }
        return (0..<response.pointee.n_models).compactMap { index in
            guard let m = response.pointee.models[index]?.pointee else { return nil }
            return ModelIndexEntry(name: String(cString: m.name), version: String(cString: m.version), state: String(cString: m.state), reason: String(cString: m.reason))
        }
    }

    /// A RepositoryModelLoadRequest or RepositoryModelUnloadRequest (the same two string fields
    /// come first in both; no parameters).
    public static func encodeModelControl(model: String, load: Bool) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        if load {
            var request = Inference__RepositoryModelLoadRequest()
            inference__repository_model_load_request__init(&request)
            request.model_name = arena.string(model)
            return withUnsafePointer(to: &request.base) { packMessage($0) }
        }
        var request = Inference__RepositoryModelUnloadRequest()
        inference__repository_model_unload_request__init(&request)
        request.model_name = arena.string(model)
        return withUnsafePointer(to: &request.base) { packMessage($0) }
    }

    public static func decodeStatistics(_ bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) -> [Statistics] {
        guard let response = inference__model_statistics_response__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.ModelStatisticsResponse", byteCount: bytes.count)
        }
        defer { inference__model_statistics_response__free_unpacked(response, nil) }
        func duration(_ d: UnsafeMutablePointer<Inference__StatisticDuration>?) -> Statistics.Duration {
            Statistics.Duration(count: d?.pointee.count ?? 0, nanoseconds: d?.pointee.ns ?? 0)
        }
        return (0..<response.pointee.n_model_stats).compactMap { index in
            guard let s = response.pointee.model_stats[index]?.pointee else { return nil }
            let stats = s.inference_stats?.pointee
            let batches = (0..<s.n_batch_stats).compactMap { index -> (size: UInt64, computeInfer: Statistics.Duration)? in
                guard let b = s.batch_stats[index]?.pointee else { return nil }
                return (b.batch_size, duration(b.compute_infer))
            }
            return Statistics(
                name: String(cString: s.name), version: String(cString: s.version), lastInference: s.last_inference,
                inferenceCount: s.inference_count, executionCount: s.execution_count,
                success: duration(stats?.success), fail: duration(stats?.fail), queue: duration(stats?.queue),
                computeInput: duration(stats?.compute_input), computeInfer: duration(stats?.compute_infer),
                computeOutput: duration(stats?.compute_output), batches: batches)
        }
    }

    private static func strings(_ list: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ count: Int) -> [String] {
        (0..<count).compactMap { index in list?[index].map { String(cString: $0) } }
    }
}

internal import CMaaSProto
internal import CProtobufC
public import MaaSCore

/// KServe v2 / Triton messages <-> MaaSCore values, through protobuf-c.
public enum KServe {
    /// `{string name = 1; string version = 2;}` requests: ModelReady, ModelMetadata, ModelConfig,
    /// ModelStatistics share this layout.
    public static func decodeNameVersion(_ bytes: UnsafeRawBufferPointer, message: String) throws(ProtobufDecodingError) -> (name: String, version: String) {
        guard let request = inference__model_ready_request__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.\(message)", byteCount: bytes.count)
        }
        defer { inference__model_ready_request__free_unpacked(request, nil) }
        return (String(cString: request.pointee.name), String(cString: request.pointee.version))
    }

    /// Validates that `bytes` is a well-formed message with no fields we must read
    /// (ServerLiveRequest, ServerReadyRequest, ServerMetadataRequest are empty).
    public static func decodeEmpty(_ bytes: UnsafeRawBufferPointer, message: String) throws(ProtobufDecodingError) {
        guard let request = inference__server_live_request__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.\(message)", byteCount: bytes.count)
        }
        inference__server_live_request__free_unpacked(request, nil)
    }

    /// ServerLiveResponse / ServerReadyResponse / ModelReadyResponse: `bool field 1`.
    public static func encodeFlag(_ value: Bool) -> [UInt8] {
        var message = Inference__ServerLiveResponse()
        inference__server_live_response__init(&message)
        message.live = value ? 1 : 0
        return withUnsafePointer(to: &message.base) { packMessage($0) }
    }

    public static func encodeServerMetadata(name: String, version: String, extensions: [String]) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var message = Inference__ServerMetadataResponse()
        inference__server_metadata_response__init(&message)
        message.name = arena.string(name)
        message.version = arena.string(version)
        message.n_extensions = extensions.count
        message.extensions = arena.array(extensions.map { Optional(arena.string($0)) })
        return withUnsafePointer(to: &message.base) { packMessage($0) }
    }

    public static func encodeModelMetadata(
        name: String, versions: [String], platform: String, inputs: [TensorMetadata], outputs: [TensorMetadata]
    ) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        func tensor(_ value: TensorMetadata) -> UnsafeMutablePointer<Inference__ModelMetadataResponse__TensorMetadata>? {
            let pointer = arena.allocate(Inference__ModelMetadataResponse__TensorMetadata.self, count: 1)
            inference__model_metadata_response__tensor_metadata__init(pointer)
            pointer.pointee.name = arena.string(value.name)
            pointer.pointee.datatype = arena.string(value.datatype)
            pointer.pointee.n_shape = value.shape.count
            pointer.pointee.shape = arena.array(value.shape)
            return pointer
        }
        var message = Inference__ModelMetadataResponse()
        inference__model_metadata_response__init(&message)
        message.name = arena.string(name)
        message.n_versions = versions.count
        message.versions = arena.array(versions.map { Optional(arena.string($0)) })
        message.platform = arena.string(platform)
        message.n_inputs = inputs.count
        message.inputs = arena.array(inputs.map(tensor))
        message.n_outputs = outputs.count
        message.outputs = arena.array(outputs.map(tensor))
        return withUnsafePointer(to: &message.base) { packMessage($0) }
    }

    public static func encodeModelConfig(_ config: ModelConfig) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var c = Inference__ModelConfig()
        inference__model_config__init(&c)
        c.name = arena.string(config.name)
        c.platform = arena.string(config.platform)
        c.backend = arena.string(config.backend)
        c.max_batch_size = Int32(clamping: config.maxBatchSize)
        c.default_model_filename = arena.string(config.defaultModelFilename)
        let inputs = config.inputs.map { value -> UnsafeMutablePointer<Inference__ModelInput>? in
            let pointer = arena.allocate(Inference__ModelInput.self, count: 1)
            inference__model_input__init(pointer)
            pointer.pointee.name = arena.string(value.name)
            pointer.pointee.data_type = Inference__DataType(rawValue: UInt32(value.dataType.modelConfigCode))
            pointer.pointee.n_dims = value.dims.count
            pointer.pointee.dims = arena.array(value.dims)
            return pointer
        }
        c.n_input = inputs.count
        c.input = arena.array(inputs)
        let outputs = config.outputs.map { value -> UnsafeMutablePointer<Inference__ModelOutput>? in
            let pointer = arena.allocate(Inference__ModelOutput.self, count: 1)
            inference__model_output__init(pointer)
            pointer.pointee.name = arena.string(value.name)
            pointer.pointee.data_type = Inference__DataType(rawValue: UInt32(value.dataType.modelConfigCode))
            pointer.pointee.n_dims = value.dims.count
            pointer.pointee.dims = arena.array(value.dims)
            return pointer
        }
        c.n_output = outputs.count
        c.output = arena.array(outputs)
        let parameters = config.parameters.sorted { $0.key < $1.key }.map { key, value in
            let entry = arena.allocate(Inference__ModelConfig__ParametersEntry.self, count: 1)
            inference__model_config__parameters_entry__init(entry)
            entry.pointee.key = arena.string(key)
            let parameter = arena.allocate(Inference__ModelParameter.self, count: 1)
            inference__model_parameter__init(parameter)
            parameter.pointee.string_value = arena.string(value)
            entry.pointee.value = parameter
            return Optional(entry)
        }
        c.n_parameters = parameters.count
        c.parameters = arena.array(parameters)

        let policy = arena.allocate(Inference__ModelVersionPolicy.self, count: 1)
        inference__model_version_policy__init(policy)
        switch config.versionPolicy {
        case .latest(let count):
            let latest = arena.allocate(Inference__ModelVersionPolicy__Latest.self, count: 1)
            inference__model_version_policy__latest__init(latest)
            latest.pointee.num_versions = UInt32(clamping: count)
            policy.pointee.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST
            policy.pointee.latest = latest
        case .all:
            let all = arena.allocate(Inference__ModelVersionPolicy__All.self, count: 1)
            inference__model_version_policy__all__init(all)
            policy.pointee.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_ALL
            policy.pointee.all = all
        case .specific(let versions):
            let specific = arena.allocate(Inference__ModelVersionPolicy__Specific.self, count: 1)
            inference__model_version_policy__specific__init(specific)
            specific.pointee.n_versions = versions.count
            specific.pointee.versions = arena.array(versions)
            policy.pointee.policy_choice_case = INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_SPECIFIC
            policy.pointee.specific = specific
        }
        c.version_policy = policy

        let group = arena.allocate(Inference__ModelInstanceGroup.self, count: 1)
        inference__model_instance_group__init(group)
        group.pointee.name = arena.string(config.name)
        group.pointee.kind = INFERENCE__MODEL_INSTANCE_GROUP__KIND__KIND_CPU
        group.pointee.count = Int32(clamping: config.instanceCount)
        c.n_instance_group = 1
        c.instance_group = arena.array([Optional(group)])

        if let batching = config.dynamicBatching {
            let dynamic = arena.allocate(Inference__ModelDynamicBatching.self, count: 1)
            inference__model_dynamic_batching__init(dynamic)
            let sizes = batching.preferredBatchSizes.map { Int32(clamping: $0) }
            dynamic.pointee.n_preferred_batch_size = sizes.count
            dynamic.pointee.preferred_batch_size = arena.array(sizes)
            dynamic.pointee.max_queue_delay_microseconds = batching.maxQueueDelayMicroseconds
            dynamic.pointee.preserve_ordering = batching.preserveOrdering ? 1 : 0
            if let queue = batching.defaultQueuePolicy {
                let q = arena.allocate(Inference__ModelQueuePolicy.self, count: 1)
                inference__model_queue_policy__init(q)
                q.pointee.timeout_action = Inference__ModelQueuePolicy__TimeoutAction(rawValue: UInt32(queue.timeoutAction.rawValue))
                q.pointee.default_timeout_microseconds = queue.defaultTimeoutMicroseconds
                q.pointee.allow_timeout_override = queue.allowTimeoutOverride ? 1 : 0
                q.pointee.max_queue_size = queue.maxQueueSize
                dynamic.pointee.default_queue_policy = q
            }
            c.scheduling_choice_case = INFERENCE__MODEL_CONFIG__SCHEDULING_CHOICE_DYNAMIC_BATCHING
            c.dynamic_batching = dynamic
        }

        var response = Inference__ModelConfigResponse()
        inference__model_config_response__init(&response)
        return withUnsafeMutablePointer(to: &c) { config in
            response.config = config
            return withUnsafePointer(to: &response.base) { packMessage($0) }
        }
    }
}

extension InferenceRequest {
    /// Decodes a `ModelInferRequest`. Sizes are not checked against any model here.
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) {
        guard let request = inference__model_infer_request__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.ModelInferRequest", byteCount: bytes.count)
        }
        defer { inference__model_infer_request__free_unpacked(request, nil) }
        let r = request.pointee
        var inputs: [InferInput] = []
        inputs.reserveCapacity(r.n_inputs)
        for index in 0..<r.n_inputs {
            guard let input = r.inputs[index]?.pointee else { continue }
            inputs.append(InferInput(
                name: String(cString: input.name), datatype: String(cString: input.datatype),
                shape: Array(UnsafeBufferPointer(start: input.shape, count: input.n_shape)),
                parameters: decodeParameters(input.parameters, input.n_parameters),
                contents: input.contents.flatMap { decodeContents($0.pointee) }))
        }
        var outputs: [String] = []
        for index in 0..<r.n_outputs {
            if let output = r.outputs[index] { outputs.append(String(cString: output.pointee.name)) }
        }
        var raw: [[UInt8]] = []
        raw.reserveCapacity(r.n_raw_input_contents)
        for index in 0..<r.n_raw_input_contents {
            let data = r.raw_input_contents[index]
            raw.append(Array(UnsafeRawBufferPointer(start: data.data, count: data.len)))
        }
        self.init(
            modelName: String(cString: r.model_name), modelVersion: String(cString: r.model_version), id: String(cString: r.id),
            parameters: decodeParameters(r.parameters, r.n_parameters), inputs: inputs, outputs: outputs, rawInputContents: raw)
    }
}

extension InferenceResponse {
    /// Encodes a `ModelInferResponse` with every output in `raw_output_contents`.
    public func serializedBytes() -> [UInt8] {
        withProtobuf { message in packMessage(UnsafeRawPointer(message).assumingMemoryBound(to: ProtobufCMessage.self)) }
    }

    /// Encodes a `ModelInferResponse` and hands its bytes to `body` without an intermediate
    /// array: small responses are packed on the stack, so the caller's copy is the only one.
    public func withSerializedBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        withProtobuf { message in
            let base = UnsafeRawPointer(message).assumingMemoryBound(to: ProtobufCMessage.self)
            let size = protobuf_c_message_get_packed_size(base)
            return withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 16) { buffer in
                let written = protobuf_c_message_pack(base, buffer.baseAddress!.assumingMemoryBound(to: UInt8.self))
                return body(UnsafeRawBufferPointer(start: buffer.baseAddress, count: written))
            }
        }
    }

    /// Encodes a `ModelStreamInferResponse` carrying this response.
    public func streamSerializedBytes() -> [UInt8] {
        withProtobuf { response in
            var message = Inference__ModelStreamInferResponse()
            inference__model_stream_infer_response__init(&message)
            message.infer_response = response
            return withUnsafePointer(to: &message.base) { packMessage($0) }
        }
    }

    private func withProtobuf<Result>(_ body: (UnsafeMutablePointer<Inference__ModelInferResponse>) -> Result) -> Result {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var message = Inference__ModelInferResponse()
        inference__model_infer_response__init(&message)
        message.model_name = arena.string(modelName)
        message.model_version = arena.string(modelVersion)
        message.id = arena.string(id)
        let tensors = outputs.map { output -> UnsafeMutablePointer<Inference__ModelInferResponse__InferOutputTensor>? in
            let pointer = arena.allocate(Inference__ModelInferResponse__InferOutputTensor.self, count: 1)
            inference__model_infer_response__infer_output_tensor__init(pointer)
            pointer.pointee.name = arena.string(output.name)
            pointer.pointee.datatype = arena.string(output.tensor.dataType.kserveName)
            let shape = output.tensor.shape.map { Int64($0) }
            pointer.pointee.n_shape = shape.count
            pointer.pointee.shape = arena.array(shape)
            return pointer
        }
        message.n_outputs = tensors.count
        message.outputs = arena.array(tensors)
        // The tensors outlive the pack below, so their bytes are referenced, not copied.
        let raw = outputs.map { output in
            ProtobufCBinaryData(len: output.tensor.byteCount, data: output.tensor.unsafeBaseAddress.assumingMemoryBound(to: UInt8.self))
        }
        message.n_raw_output_contents = raw.count
        message.raw_output_contents = arena.array(raw)
        let result = withUnsafeMutablePointer(to: &message) { body($0) }
        withExtendedLifetime(outputs) {}
        return result
    }
}

private func decodeParameter(_ parameter: UnsafeMutablePointer<Inference__InferParameter>?) -> InferParameter? {
    guard let p = parameter?.pointee else { return nil }
    switch p.parameter_choice_case {
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM: return .bool(p.bool_param != 0)
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM: return .int64(p.int64_param)
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM: return .string(String(cString: p.string_param))
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM: return .double(p.double_param)
    case INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM: return .uint64(p.uint64_param)
    default: return nil
    }
}

/// The map entries of the `parameters` fields: one generated struct per map, same members.
private protocol ParameterEntry {
    var key: UnsafeMutablePointer<CChar>! { get }
    var value: UnsafeMutablePointer<Inference__InferParameter>! { get }
}

extension Inference__ModelInferRequest__ParametersEntry: ParameterEntry {}
extension Inference__ModelInferRequest__InferInputTensor__ParametersEntry: ParameterEntry {}

private func decodeParameters<Entry: ParameterEntry>(_ entries: UnsafeMutablePointer<UnsafeMutablePointer<Entry>?>?, _ count: Int) -> [String: InferParameter] {
    guard let entries, count > 0 else { return [:] }
    var result: [String: InferParameter] = [:]
    for index in 0..<count {
        guard let entry = entries[index]?.pointee, let key = entry.key else { continue }
        if let parameter = decodeParameter(entry.value) { result[String(cString: key)] = parameter }
    }
    return result
}

func decodeContents(_ c: Inference__InferTensorContents) -> TypedContents? {
    if c.n_fp32_contents > 0 { return .fp32(Array(UnsafeBufferPointer(start: c.fp32_contents, count: c.n_fp32_contents))) }
    if c.n_int64_contents > 0 { return .int64(Array(UnsafeBufferPointer(start: c.int64_contents, count: c.n_int64_contents))) }
    if c.n_int_contents > 0 { return .int32(Array(UnsafeBufferPointer(start: c.int_contents, count: c.n_int_contents))) }
    if c.n_fp64_contents > 0 { return .fp64(Array(UnsafeBufferPointer(start: c.fp64_contents, count: c.n_fp64_contents))) }
    if c.n_uint_contents > 0 { return .uint32(Array(UnsafeBufferPointer(start: c.uint_contents, count: c.n_uint_contents))) }
    if c.n_uint64_contents > 0 { return .uint64(Array(UnsafeBufferPointer(start: c.uint64_contents, count: c.n_uint64_contents))) }
    if c.n_bool_contents > 0 { return .bool(UnsafeBufferPointer(start: c.bool_contents, count: c.n_bool_contents).map { $0 != 0 }) }
    if c.n_bytes_contents > 0 {
        return .bytes(UnsafeBufferPointer(start: c.bytes_contents, count: c.n_bytes_contents).map { Array(UnsafeRawBufferPointer(start: $0.data, count: $0.len)) })
    }
    return nil
}

// MARK: - Repository and statistics messages

extension KServe {
    /// One row of RepositoryIndexResponse.
    public struct ModelIndexEntry: Sendable {
        public var name: String, version: String, state: String, reason: String
        public init(name: String, version: String, state: String, reason: String) {
            (self.name, self.version, self.state, self.reason) = (name, version, state, reason)
        }
    }

    /// Statistics of one model version, with Triton's meaning.
    public struct Statistics: Sendable {
        public struct Duration: Sendable {
            public var count: UInt64, nanoseconds: UInt64
            public init(count: UInt64, nanoseconds: UInt64) { (self.count, self.nanoseconds) = (count, nanoseconds) }
        }
        public var name: String, version: String
        public var lastInference: UInt64, inferenceCount: UInt64, executionCount: UInt64
        public var success: Duration, fail: Duration, queue: Duration
        public var computeInput: Duration, computeInfer: Duration, computeOutput: Duration
        public var batches: [(size: UInt64, computeInfer: Duration)]

        public init(
            name: String, version: String, lastInference: UInt64, inferenceCount: UInt64, executionCount: UInt64,
            success: Duration, fail: Duration, queue: Duration, computeInput: Duration, computeInfer: Duration,
            computeOutput: Duration, batches: [(size: UInt64, computeInfer: Duration)]
        ) {
            (self.name, self.version, self.lastInference, self.inferenceCount, self.executionCount) = (name, version, lastInference, inferenceCount, executionCount)
            (self.success, self.fail, self.queue) = (success, fail, queue)
            (self.computeInput, self.computeInfer, self.computeOutput, self.batches) = (computeInput, computeInfer, computeOutput, batches)
        }
    }

    /// RepositoryIndexRequest: (repository_name, ready-only flag).
    public static func decodeIndexRequest(_ bytes: UnsafeRawBufferPointer) throws(ProtobufDecodingError) -> (repository: String, readyOnly: Bool) {
        guard let request = inference__repository_index_request__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.RepositoryIndexRequest", byteCount: bytes.count)
        }
        defer { inference__repository_index_request__free_unpacked(request, nil) }
        return (String(cString: request.pointee.repository_name), request.pointee.ready != 0)
    }

    public static func encodeIndex(_ entries: [ModelIndexEntry]) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        let rows = entries.map { entry -> UnsafeMutablePointer<Inference__RepositoryIndexResponse__ModelIndex>? in
            let row = arena.allocate(Inference__RepositoryIndexResponse__ModelIndex.self, count: 1)
            inference__repository_index_response__model_index__init(row)
            row.pointee.name = arena.string(entry.name)
            row.pointee.version = arena.string(entry.version)
            row.pointee.state = arena.string(entry.state)
            row.pointee.reason = arena.string(entry.reason)
            return row
        }
        var message = Inference__RepositoryIndexResponse()
        inference__repository_index_response__init(&message)
        message.n_models = rows.count
        message.models = arena.array(rows)
        return withUnsafePointer(to: &message.base) { packMessage($0) }
    }

    /// RepositoryModelLoadRequest / RepositoryModelUnloadRequest: (repository_name, model_name).
    public static func decodeModelControl(_ bytes: UnsafeRawBufferPointer, load: Bool) throws(ProtobufDecodingError) -> (repository: String, model: String) {
        if load {
            guard let request = inference__repository_model_load_request__unpack(nil, bytes.count, bytes.cBytes) else {
                throw ProtobufDecodingError(messageName: "inference.RepositoryModelLoadRequest", byteCount: bytes.count)
            }
            defer { inference__repository_model_load_request__free_unpacked(request, nil) }
            return (String(cString: request.pointee.repository_name), String(cString: request.pointee.model_name))
        }
        guard let request = inference__repository_model_unload_request__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.RepositoryModelUnloadRequest", byteCount: bytes.count)
        }
        defer { inference__repository_model_unload_request__free_unpacked(request, nil) }
        return (String(cString: request.pointee.repository_name), String(cString: request.pointee.model_name))
    }

    /// A `ModelStreamInferResponse` reporting an error for one request of the stream.
    public static func encodeStreamError(_ message: String) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var response = Inference__ModelStreamInferResponse()
        inference__model_stream_infer_response__init(&response)
        response.error_message = arena.string(message)
        return withUnsafePointer(to: &response.base) { packMessage($0) }
    }

    /// RepositoryModelLoadResponse and RepositoryModelUnloadResponse carry no fields.
    public static let emptyResponse: [UInt8] = []

    public static func encodeStatistics(_ models: [Statistics]) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        func duration(_ value: Statistics.Duration) -> UnsafeMutablePointer<Inference__StatisticDuration> {
            let d = arena.allocate(Inference__StatisticDuration.self, count: 1)
            inference__statistic_duration__init(d)
            d.pointee.count = value.count
            d.pointee.ns = value.nanoseconds
            return d
        }
        let zero = Statistics.Duration(count: 0, nanoseconds: 0)
        let rows = models.map { model -> UnsafeMutablePointer<Inference__ModelStatistics>? in
            let s = arena.allocate(Inference__ModelStatistics.self, count: 1)
            inference__model_statistics__init(s)
            s.pointee.name = arena.string(model.name)
            s.pointee.version = arena.string(model.version)
            s.pointee.last_inference = model.lastInference
            s.pointee.inference_count = model.inferenceCount
            s.pointee.execution_count = model.executionCount
            let stats = arena.allocate(Inference__InferStatistics.self, count: 1)
            inference__infer_statistics__init(stats)
            stats.pointee.success = duration(model.success)
            stats.pointee.fail = duration(model.fail)
            stats.pointee.queue = duration(model.queue)
            stats.pointee.compute_input = duration(model.computeInput)
            stats.pointee.compute_infer = duration(model.computeInfer)
            stats.pointee.compute_output = duration(model.computeOutput)
            stats.pointee.cache_hit = duration(zero)
            stats.pointee.cache_miss = duration(zero)
            s.pointee.inference_stats = stats
            let batches = model.batches.map { batch -> UnsafeMutablePointer<Inference__InferBatchStatistics>? in
                let b = arena.allocate(Inference__InferBatchStatistics.self, count: 1)
                inference__infer_batch_statistics__init(b)
                b.pointee.batch_size = batch.size
                b.pointee.compute_input = duration(Statistics.Duration(count: batch.computeInfer.count, nanoseconds: 0))
                b.pointee.compute_infer = duration(batch.computeInfer)
                b.pointee.compute_output = duration(Statistics.Duration(count: batch.computeInfer.count, nanoseconds: 0))
                return b
            }
            s.pointee.n_batch_stats = batches.count
            s.pointee.batch_stats = arena.array(batches)
            return s
        }
        var message = Inference__ModelStatisticsResponse()
        inference__model_statistics_response__init(&message)
        message.n_model_stats = rows.count
        message.model_stats = arena.array(rows)
        return withUnsafePointer(to: &message.base) { packMessage($0) }
    }
}

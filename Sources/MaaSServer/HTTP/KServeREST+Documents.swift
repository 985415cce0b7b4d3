import MaaSCore
import MaaSJSON
import MaaSModels
import MaaSProto

/// The JSON documents of KServe v2 REST other than inference, in the shapes Triton's HTTP
/// frontend answers (its field names, its `TYPE_*` and `KIND_*` names, integers as numbers).
enum KServeDocuments {
    static func serverMetadata() -> JSONValue {
        .object([
            ("name", .string(InferenceCore.serverName)),
            ("version", .string(InferenceCore.serverVersion)),
            ("extensions", .array(InferenceCore.extensions.map(JSONValue.string))),
        ])
    }

    static func modelMetadata(_ model: ModelVersion, name: String, versions: [String]) -> JSONValue {
        func tensors(_ list: [TensorMetadata]) -> JSONValue {
            .array(list.map { .object([("name", .string($0.name)), ("datatype", .string($0.datatype)), ("shape", ints($0.shape))]) })
        }
        return .object([
            ("name", .string(name)),
            ("versions", .array(versions.map(JSONValue.string))),
            ("platform", .string(model.config.platform)),
            ("inputs", tensors(model.inputMetadata)),
            ("outputs", tensors(model.outputMetadata)),
        ])
    }

    /// The model configuration as Triton's `GET /v2/models/{m}/config` renders its protobuf.
    static func modelConfig(_ config: ModelConfig) -> JSONValue {
        func tensors(_ list: [ModelConfig.Tensor]) -> JSONValue {
            .array(list.map { .object([("name", .string($0.name)), ("data_type", .string(typeName($0.dataType))), ("dims", ints($0.dims))]) })
        }
        let policy: JSONValue = switch config.versionPolicy {
        case .latest(let count): .object([("latest", .object([("num_versions", int(count))]))])
        case .all: .object([("all", .object([]))])
        case .specific(let versions): .object([("specific", .object([("versions", ints(versions))]))])
        }
        var members: [(key: String, value: JSONValue)] = [
            ("name", .string(config.name)),
            ("platform", .string(config.platform)),
            ("backend", .string(config.backend)),
            ("version_policy", policy),
            ("max_batch_size", int(config.maxBatchSize)),
            ("input", tensors(config.inputs)),
            ("output", tensors(config.outputs)),
            ("instance_group", .array([.object([
                ("name", .string(config.name)), ("kind", .string("KIND_CPU")), ("count", int(config.instanceCount)),
            ])])),
            ("default_model_filename", .string(config.defaultModelFilename)),
            ("parameters", .object(config.parameters.sorted { $0.key < $1.key }.map { ($0.key, .object([("string_value", .string($0.value))])) })),
        ]
        if let batching = config.dynamicBatching {
            var dynamic: [(key: String, value: JSONValue)] = [
                ("preferred_batch_size", ints(batching.preferredBatchSizes)),
                ("max_queue_delay_microseconds", int(batching.maxQueueDelayMicroseconds)),
                ("preserve_ordering", .bool(batching.preserveOrdering)),
            ]
            if let queue = batching.defaultQueuePolicy {
                dynamic.append(("default_queue_policy", .object([
                    ("timeout_action", .string(queue.timeoutAction == .reject ? "REJECT" : "DELAY")),
                    ("default_timeout_microseconds", int(queue.defaultTimeoutMicroseconds)),
                    ("allow_timeout_override", .bool(queue.allowTimeoutOverride)),
                    ("max_queue_size", int(queue.maxQueueSize)),
                ])))
            }
            members.append(("dynamic_batching", .object(dynamic)))
        }
        return .object(members)
    }

    /// `GET /v2/models[/{m}[/versions/{v}]]/stats`.
    static func statistics(_ models: [KServe.Statistics]) -> JSONValue {
        func duration(_ value: KServe.Statistics.Duration) -> JSONValue {
            .object([("count", int(value.count)), ("ns", int(value.nanoseconds))])
        }
        let zero = duration(.init(count: 0, nanoseconds: 0))
        return .object([("model_stats", .array(models.map { s in
            .object([
                ("name", .string(s.name)),
                ("version", .string(s.version)),
                ("last_inference", int(s.lastInference)),
                ("inference_count", int(s.inferenceCount)),
                ("execution_count", int(s.executionCount)),
                ("inference_stats", .object([
                    ("success", duration(s.success)), ("fail", duration(s.fail)), ("queue", duration(s.queue)),
                    ("compute_input", duration(s.computeInput)), ("compute_infer", duration(s.computeInfer)),
                    ("compute_output", duration(s.computeOutput)), ("cache_hit", zero), ("cache_miss", zero),
                ])),
                ("batch_stats", .array(s.batches.map { batch in
                    .object([("batch_size", int(batch.size)), ("compute_infer", duration(batch.computeInfer))])
                })),
            ])
        }))])
    }

    /// `POST /v2/repository/index`.
    static func index(_ entries: [KServe.ModelIndexEntry]) -> JSONValue {
        .array(entries.map { entry in
            var members: [(key: String, value: JSONValue)] = [("name", .string(entry.name))]
            if !entry.version.isEmpty { members.append(("version", .string(entry.version))) }
            members.append(("state", .string(entry.state)))
            if !entry.reason.isEmpty { members.append(("reason", .string(entry.reason))) }
            return .object(members)
        })
    }

    /// Triton's model-configuration type names (`TYPE_FP32`, `TYPE_STRING` for BYTES).
    static func typeName(_ type: DataType) -> String {
        type == .string ? "TYPE_STRING" : "TYPE_" + type.kserveName
    }

    static func int(_ value: some BinaryInteger) -> JSONValue {
        if let exact = Int64(exactly: value) { return .number(.int(exact)) }
        return .number(.uint(UInt64(clamping: value)))
    }

    static func ints(_ values: [some BinaryInteger]) -> JSONValue {
        .array(values.map(int))
    }
}

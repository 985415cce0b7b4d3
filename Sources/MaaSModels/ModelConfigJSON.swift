public import MaaSCore
internal import MaaSJSON

extension ModelConfig {
    /// Parses `config.json`: the JSON form of Triton's ModelConfig, for the fields we support.
    /// Unknown fields are errors, so a typo never silently changes behavior.
    public static func parse(json bytes: [UInt8], modelName: String) throws(InferenceError) -> ModelConfig {
        let document: JSONValue
        do {
            document = try bytes.withUnsafeBytes { (raw) throws(JSONError) in try JSONReader.parse(raw) }
        } catch {
            throw .invalidModel("config.json of '\(modelName)' is not valid JSON: \(error)")
        }
        guard case .object = document else {
            throw .invalidModel("config.json of '\(modelName)' must be a JSON object")
        }
        var parser = ConfigParser(model: modelName)
        return try parser.config(document)
    }
}

private struct ConfigParser {
    let model: String

    func fail(_ message: String) -> InferenceError {
        .invalidModel("config.json of '\(model)': \(message)")
    }

    func check(_ object: JSONValue, allowed: Set<String>, at path: String) throws(InferenceError) {
        if let repeated = object.duplicateKey { throw fail("field '\(path)\(repeated)' appears twice") }
        if let unknown = (object.members ?? []).map(\.key).sorted().first(where: { !allowed.contains($0) }) {
            throw fail("unknown field '\(path)\(unknown)' (supported: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    func int(_ value: JSONValue?, _ path: String) throws(InferenceError) -> Int64? {
        guard let value else { return nil }
        if let number = value.number?.int64 { return number }
        if let string = value.string, let number = Int64(string) { return number }  // protobuf JSON writes 64-bit ints as strings
        throw fail("'\(path)' must be an integer, got \(JSONValue.describe(value))")
    }

    func bool(_ value: JSONValue?, _ path: String) throws(InferenceError) -> Bool? {
        guard let value else { return nil }
        guard let flag = value.bool else { throw fail("'\(path)' must be true or false, got \(JSONValue.describe(value))") }
        return flag
    }

    /// The member if it is an object; nil if absent; an error naming the field otherwise.
    func object(_ value: JSONValue?, _ path: String, _ expected: String) throws(InferenceError) -> JSONValue? {
        guard let value else { return nil }
        guard case .object = value else { throw fail("'\(path)' must be \(expected), got \(JSONValue.describe(value))") }
        return value
    }

    mutating func config(_ root: JSONValue) throws(InferenceError) -> ModelConfig {
        try check(root, allowed: ["name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching", "version_policy", "instance_group", "default_model_filename", "parameters", "padded_batching", "text_input"], at: "")
        var config = ModelConfig(name: model)
        if let name = root["name"]?.string, name != model {
            throw fail("name '\(name)' does not match the model's directory '\(model)'")
        }
        if let platform = root["platform"]?.string, platform != "onnxruntime_onnx" {
            throw fail("platform '\(platform)' is not supported (only onnxruntime_onnx)")
        }
        if let backend = root["backend"]?.string, !["onnxruntime", "maas"].contains(backend) {
            throw fail("backend '\(backend)' is not supported (onnxruntime or maas)")
        }
        if let maxBatch = try int(root["max_batch_size"], "max_batch_size") {
            guard maxBatch >= 0, maxBatch <= 1 << 20 else { throw fail("max_batch_size \(maxBatch) is out of range (0...\(1 << 20))") }
            config.maxBatchSize = Int(maxBatch)
        }
        config.inputs = try tensors(root["input"], "input")
        config.outputs = try tensors(root["output"], "output")
        if let object = try object(root["dynamic_batching"], "dynamic_batching", "an object") {
            config.dynamicBatching = try dynamicBatching(object)
            if config.maxBatchSize == 0 {
                throw fail("dynamic_batching needs max_batch_size > 0")
            }
        }
        if let policy = root["version_policy"] {
            guard let members = policy.members, members.count == 1 else {
                throw fail("'version_policy' must be one of {\"latest\": {...}}, {\"all\": {}}, {\"specific\": {...}}")
            }
            config.versionPolicy = try versionPolicy(policy)
        }
        if let parameters = try object(root["parameters"], "parameters", "an object") {
            if let repeated = parameters.duplicateKey { throw fail("field 'parameters.\(repeated)' appears twice") }
            for (key, value) in parameters.members ?? [] {
                guard let entry = value.members, entry.count == 1, let string = value["string_value"]?.string else {
                    throw fail("'parameters.\(key)' must be {\"string_value\": \"...\"}")
                }
                config.parameters[key] = string
            }
        }
        if let padded = root["padded_batching"] {
            if case .object = padded {
                config.paddedBatching = try paddedBatching(padded)
            } else if padded.bool == false {
                config.paddedBatchingDisabled = true
            } else {
                throw fail("'padded_batching' must be an object ({\"pad_values\": {...}, \"trim_outputs\": [...]}) or false")
            }
        }
        if let text = try object(root["text_input"], "text_input", "an object") {
            config.textInput = try textInput(text)
        }
        if let filename = root["default_model_filename"]?.string {
            guard !filename.contains("/"), filename.hasSuffix(".onnx") else { throw fail("default_model_filename '\(filename)' must be a .onnx file name") }
            config.defaultModelFilename = filename
        }
        return config
    }

    func tensors(_ value: JSONValue?, _ path: String) throws(InferenceError) -> [ModelConfig.Tensor] {
        guard let value else { return [] }
        guard let list = value.array, list.allSatisfy({ $0.members != nil }) else { throw fail("'\(path)' must be a list of objects") }
        var result: [ModelConfig.Tensor] = []
        for (index, entry) in list.enumerated() {
            try check(entry, allowed: ["name", "data_type", "dims", "format"], at: "\(path)[\(index)].")
            guard let name = entry["name"]?.string, !name.isEmpty else { throw fail("'\(path)[\(index)]' needs a name") }
            guard let typeName = entry["data_type"]?.string, let type = DataType(modelConfigName: typeName) else {
                throw fail("\(path) '\(name)' has data_type \(JSONValue.describe(entry["data_type"])); expected TYPE_FP32, TYPE_INT64, ...")
            }
            guard let rawDims = entry["dims"]?.array else { throw fail("\(path) '\(name)' needs dims") }
            var dims: [Int64] = []
            for dim in rawDims {
                guard let value = try int(dim, "\(path) '\(name)' dims"), value == -1 || value >= 0 else {
                    throw fail("\(path) '\(name)' has dims \(JSONValue.describe(dim)) among its dims; each must be -1 or >= 0")
                }
                dims.append(value)
            }
            result.append(ModelConfig.Tensor(name: name, dataType: type, dims: dims))
        }
        return result
    }

    func dynamicBatching(_ object: JSONValue) throws(InferenceError) -> ModelConfig.DynamicBatching {
        try check(object, allowed: ["preferred_batch_size", "max_queue_delay_microseconds", "preserve_ordering", "default_queue_policy"], at: "dynamic_batching.")
        var batching = ModelConfig.DynamicBatching()
        if let sizes = object["preferred_batch_size"] {
            guard let list = sizes.array else { throw fail("'dynamic_batching.preferred_batch_size' must be a list") }
            for size in list {
                guard let value = try int(size, "preferred_batch_size"), value > 0 else { throw fail("preferred_batch_size entries must be > 0") }
                batching.preferredBatchSizes.append(Int(value))
            }
        }
        if let delay = try int(object["max_queue_delay_microseconds"], "max_queue_delay_microseconds") {
            guard delay >= 0, delay <= 10_000_000 else { throw fail("max_queue_delay_microseconds \(delay) is out of range (0...10000000)") }
            batching.maxQueueDelayMicroseconds = UInt64(delay)
        }
        batching.preserveOrdering = try bool(object["preserve_ordering"], "preserve_ordering") ?? false
        if let queue = try self.object(object["default_queue_policy"], "dynamic_batching.default_queue_policy", "an object") {
            try check(queue, allowed: ["max_queue_size", "default_timeout_microseconds", "allow_timeout_override", "timeout_action"], at: "dynamic_batching.default_queue_policy.")
            var result = ModelConfig.QueuePolicy()
            if let size = try int(queue["max_queue_size"], "max_queue_size") {
                guard size >= 0, size <= 1_000_000 else { throw fail("max_queue_size \(size) is out of range") }
                result.maxQueueSize = UInt32(size)
            }
            if let timeout = try int(queue["default_timeout_microseconds"], "default_timeout_microseconds") {
                guard timeout >= 0 else { throw fail("default_timeout_microseconds must be >= 0") }
                result.defaultTimeoutMicroseconds = UInt64(timeout)
            }
            result.allowTimeoutOverride = try bool(queue["allow_timeout_override"], "allow_timeout_override") ?? false
            if let actionValue = queue["timeout_action"] {
                guard let action = actionValue.string else { throw fail("timeout_action must be REJECT or DELAY, got \(JSONValue.describe(actionValue))") }
                switch action {
                case "REJECT": result.timeoutAction = .reject
                case "DELAY": result.timeoutAction = .delay
                default: throw fail("timeout_action '\(action)' is not REJECT or DELAY")
                }
            }
            batching.defaultQueuePolicy = result
        }
        return batching
    }

    func paddedBatching(_ object: JSONValue) throws(InferenceError) -> ModelConfig.PaddedBatching {
        try check(object, allowed: ["pad_values", "trim_outputs"], at: "padded_batching.")
        guard let padValuesObject = object["pad_values"], padValuesObject.duplicateKey == nil,
              let values = padValuesObject.members, !values.isEmpty else {
            throw fail("'padded_batching.pad_values' must name the padded inputs with their pad values, e.g. {\"input_ids\": 0}")
        }
        var padValues: [String: Double] = [:]
        for (name, value) in values {
            guard let number = value.number?.double, number.isFinite else {
                throw fail("'padded_batching.pad_values.\(name)' must be a number, got \(JSONValue.describe(value))")
            }
            padValues[name] = number
        }
        var trimmed: [String]?
        if let list = object["trim_outputs"] {
            guard let names = list.array?.compactMap(\.string), names.count == list.array?.count else { throw fail("'padded_batching.trim_outputs' must be a list of output names") }
            trimmed = names
        }
        return ModelConfig.PaddedBatching(padValues: padValues, trimmedOutputs: trimmed)
    }

    func textInput(_ object: JSONValue) throws(InferenceError) -> ModelConfig.TextInput {
        try check(object, allowed: ["name", "tokenizer", "max_length", "pooling", "normalize"], at: "text_input.")
        guard let file = object["tokenizer"]?.string, !file.isEmpty, !file.contains("/"), file != "..", file != "." else {
            throw fail("'text_input.tokenizer' must name a tokenizer.json file in the version folder")
        }
        var text = ModelConfig.TextInput(tokenizer: file)
        if let name = object["name"] {
            guard let name = name.string, !name.isEmpty else { throw fail("'text_input.name' must be a non-empty string") }
            text.name = name
        }
        if let length = try int(object["max_length"], "text_input.max_length") {
            guard length >= 2, length <= 1 << 16 else { throw fail("text_input.max_length \(length) is out of range (2...65536): [CLS] and [SEP] take 2") }
            text.maxLength = Int(length)
        }
        if let pooling = object["pooling"] {
            guard let name = pooling.string, let value = ModelConfig.TextInput.Pooling(rawValue: name) else {
                throw fail("text_input.pooling must be one of \(ModelConfig.TextInput.Pooling.allCases.map(\.rawValue)), got \(JSONValue.describe(pooling))")
            }
            text.pooling = value
        }
        text.normalize = try bool(object["normalize"], "text_input.normalize") ?? true
        return text
    }

    func versionPolicy(_ object: JSONValue) throws(InferenceError) -> ModelConfig.VersionPolicy {
        if let latest = object["latest"] {
            guard let fields = try self.object(latest, "version_policy.latest", "an object") else { throw fail("'version_policy.latest' must be an object") }
            try check(fields, allowed: ["num_versions"], at: "version_policy.latest.")
            let count = try int(fields["num_versions"], "num_versions") ?? 1
            guard count >= 1 else { throw fail("version_policy.latest.num_versions must be >= 1") }
            return .latest(Int(count))
        }
        if object["all"] != nil { return .all }
        if let specific = try self.object(object["specific"], "version_policy.specific", "an object") {
            try check(specific, allowed: ["versions"], at: "version_policy.specific.")
            guard let list = specific["versions"]?.array, !list.isEmpty else { throw fail("version_policy.specific needs versions") }
            var versions: [Int64] = []
            for entry in list {
                guard let value = try int(entry, "versions"), value >= 1 else { throw fail("version numbers must be >= 1") }
                versions.append(value)
            }
            return .specific(versions)
        }
        throw fail("unknown version_policy \((object.members ?? []).map(\.key).sorted()); expected latest, all or specific")
    }
}

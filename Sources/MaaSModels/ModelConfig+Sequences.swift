import MaaSCore

/// Padded batching and text input: our extensions of Triton's ModelConfig for sequence models,
/// derived from the graph where its names say what the inputs are, and checked against it.
extension ModelConfig {
    /// Hugging Face's token input names, each padded with 0 (the id of [PAD] in BERT vocabularies;
    /// any id is right as long as the attention mask hides the padding, which is why the mask is
    /// required for padding to be derived).
    static let tokenInputNames: Set<String> = ["input_ids", "attention_mask", "token_type_ids"]

    /// Padded batching for a graph whose inputs are exactly Hugging Face token inputs of shape
    /// [batch, sequence], attention_mask among them; nil otherwise.
    static func derivedPadding(_ graph: ModelGraph) -> PaddedBatching? {
        let names = Set(graph.inputs.map(\.name))
        guard names.isSubset(of: tokenInputNames), names.contains("attention_mask"),
            graph.inputs.allSatisfy({ $0.shape.count == 2 && !$0.shape[1].isFixed })
        else { return nil }
        return PaddedBatching(padValues: Dictionary(uniqueKeysWithValues: names.map { ($0, 0) }), trimmedOutputs: nil)
    }

    /// Outputs whose axis 1 carries the padded inputs' symbolic sequence name.
    static func derivedTrimmedOutputs(_ graph: ModelGraph, padded: Set<String>) -> [String] {
        let symbols = Set(graph.inputs.filter { padded.contains($0.name) }.compactMap { input -> String? in
            guard input.shape.count >= 2, case .symbolic(let name) = input.shape[1], !name.isEmpty else { return nil }
            return name
        })
        return graph.outputs.filter { output in
            guard output.shape.count >= 2, case .symbolic(let name) = output.shape[1] else { return false }
            return symbols.contains(name)
        }.map(\.name)
    }

    /// Fills in what padded batching and text input leave to the graph: the trimmed outputs,
    /// and for a text model its `text` input and `embedding` output in place of the graph's.
    mutating func completeSequenceFields(from graph: ModelGraph) {
        if paddedBatching == nil, !paddedBatchingDisabled, maxBatchSize > 0 {
            paddedBatching = Self.derivedPadding(graph)
        }
        if var padding = paddedBatching, padding.trimmedOutputs == nil {
            padding.trimmedOutputs = Self.derivedTrimmedOutputs(graph, padded: Set(padding.padValues.keys))
            paddedBatching = padding
        }
        guard let text = textInput else { return }
        if inputs.isEmpty || inputs.map(\.name) == graph.inputs.map(\.name) {
            inputs = [Tensor(name: text.name, dataType: .string, dims: [1])]
        }
        if text.pooling == .mean, outputs.isEmpty || outputs.map(\.name) == graph.outputs.map(\.name) {
            var hidden: Int64 = -1
            if let first = graph.outputs.first, first.shape.count == 3, case .fixed(let size) = first.shape[2] { hidden = Int64(size) }
            outputs = [Tensor(name: TextInput.embeddingOutput, dataType: .float32, dims: [hidden])]
        }
    }

    /// Refuses padded batching and text input that contradict each other or the graph, saying why.
    func checkSequenceFields(against graph: ModelGraph, model: String) throws(InferenceError) {
        func fail(_ message: String) -> InferenceError { .invalidModel("config.json of '\(model)': \(message)") }
        if let padding = paddedBatching {
            guard maxBatchSize > 0 else { throw fail("padded_batching needs max_batch_size > 0 (requests are padded to share a batch)") }
            for (name, value) in padding.padValues.sorted(by: { $0.key < $1.key }) {
                guard let input = graph.inputs.first(where: { $0.name == name }) else {
                    throw fail("padded_batching pads input '\(name)', which the model does not have (it has \(graph.inputs.map(\.name)))")
                }
                if !input.shape.isEmpty {
                    guard input.shape.count >= 2 else {
                        throw fail("padded_batching pads input '\(name)' along axis 1, but its shape \(input.shape) has no axis after the batch")
                    }
                    guard !input.shape[1].isFixed else {
                        throw fail("padded_batching pads input '\(name)' along axis 1, which is fixed in the model (\(input.shape)): every request has the same length")
                    }
                }
                guard input.dataType.holds(value) else {
                    throw fail("padded_batching pad value \(value) for input '\(name)' is not a \(input.dataType.modelConfigName) value")
                }
            }
            for name in padding.trimmedOutputs ?? [] {
                guard let output = graph.outputs.first(where: { $0.name == name }) else {
                    throw fail("padded_batching trims output '\(name)', which the model does not have (it has \(graph.outputs.map(\.name)))")
                }
                if !output.shape.isEmpty, output.shape.count < 2 || output.shape[1].isFixed {
                    throw fail("padded_batching trims output '\(name)' along axis 1, which is not a variable axis in the model (\(output.shape))")
                }
            }
        }
        guard let text = textInput else { return }
        guard maxBatchSize > 0 else { throw fail("text_input needs max_batch_size > 0 (each text is one batch row)") }
        let names = graph.inputs.map(\.name)
        guard Set(names).isSubset(of: Self.tokenInputNames), names.contains("input_ids") else {
            throw fail("text_input replaces the token inputs input_ids[, attention_mask, token_type_ids], but the model's inputs are \(names)")
        }
        for input in graph.inputs where ![.int64, .int32].contains(input.dataType) {
            throw fail("text_input feeds token ids, but input '\(input.name)' is \(input.dataType.modelConfigName) (INT64 or INT32 expected)")
        }
        guard paddedBatching != nil else {
            throw fail("text_input needs padded batching (texts differ in length); remove \"padded_batching\": false")
        }
        guard inputs.count == 1, inputs[0].name == text.name, inputs[0].dataType == .string else {
            throw fail("with text_input the only input is '\(text.name)' (TYPE_STRING); the config declares \(inputs.map(\.name))")
        }
        if text.pooling == .mean {
            guard let first = graph.outputs.first, first.shape.isEmpty || first.shape.count == 3 else {
                throw fail("text_input pooling 'mean' averages the first output over tokens, which must be [batch, sequence, hidden]; it is \(graph.outputs.first.map { "\($0.shape)" } ?? "missing")")
            }
            guard outputs.map(\.name) == [TextInput.embeddingOutput] else {
                throw fail("with text_input pooling 'mean' the only output is '\(TextInput.embeddingOutput)'; the config declares \(outputs.map(\.name))")
            }
        }
    }
}

extension ValueInfo.Dimension {
    var isFixed: Bool {
        if case .fixed = self { return true }
        return false
    }
}

extension DataType {
    /// Whether `value` is exactly representable in this type (pad values).
    func holds(_ value: Double) -> Bool {
        switch self {
        case .float32, .float64: return value.isFinite
        case .float16, .bfloat16: return value == 0
        case .bool: return value == 0 || value == 1
        case .int8: return value == value.rounded() && value >= -128 && value <= 127
        case .int16: return value == value.rounded() && value >= -32768 && value <= 32767
        case .int32: return value == value.rounded() && value >= -2_147_483_648 && value <= 2_147_483_647
        case .int64: return value == value.rounded() && abs(value) <= 9.007_199_254_740_992e15
        case .uint8: return value == value.rounded() && value >= 0 && value <= 255
        case .uint16: return value == value.rounded() && value >= 0 && value <= 65535
        case .uint32: return value == value.rounded() && value >= 0 && value <= 4_294_967_295
        case .uint64: return value == value.rounded() && value >= 0 && value <= 9.007_199_254_740_992e15
        case .string: return false
        }
    }
}

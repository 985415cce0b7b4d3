public import MaaSCore
public import MaaSText

/// A text model's two ends: texts in (KServe BYTES) → token tensors for the graph, and the
/// graph's first output → one mean-pooled, L2-normalised embedding per text.
public struct TextPipeline: Sendable {
    public let settings: ModelConfig.TextInput
    public let tokenizer: WordPieceTokenizer
    /// The graph's token inputs (input_ids[, attention_mask, token_type_ids]) and their types.
    let tokenInputs: [(name: String, dataType: DataType)]
    /// The output that is pooled (the graph's first).
    let pooledOutput: String

    public init(settings: ModelConfig.TextInput, tokenizer: WordPieceTokenizer, graph: ModelGraph) {
        self.settings = settings
        self.tokenizer = tokenizer
        tokenInputs = graph.inputs.map { ($0.name, $0.dataType) }
        pooledOutput = graph.outputs.first?.name ?? ""
    }

    /// How many tokens the model sees for `text` (special tokens included, cut at max_length).
    public func tokenCount(_ text: String) -> Int {
        tokenizer.encode(text, maxLength: settings.maxLength).count
    }

    /// The texts of a BYTES input: from `raw` (KServe's 4-byte little-endian length before each
    /// element) or from `bytes_contents`; each must be valid UTF-8.
    static func texts(raw: [UInt8]?, contents: TypedContents?, count: Int, label: String) throws(InferenceError) -> [String] {
        var elements: [ArraySlice<UInt8>] = []
        if let raw {
            var offset = 0
            while offset < raw.count {
                guard raw.count - offset >= 4 else {
                    throw .invalidInput("\(label): raw BYTES element \(elements.count) has a truncated length prefix (\(raw.count - offset) bytes left, 4 needed)")
                }
                let length = Int(raw[offset]) | Int(raw[offset + 1]) << 8 | Int(raw[offset + 2]) << 16 | Int(raw[offset + 3]) << 24
                offset += 4
                guard length <= raw.count - offset else {
                    throw .invalidInput("\(label): raw BYTES element \(elements.count) says \(length) bytes, \(raw.count - offset) are left")
                }
                elements.append(raw[offset..<offset + length])
                offset += length
            }
        } else if case .bytes(let values)? = contents {
            elements = values.map { $0[...] }
        } else {
            throw .invalidInput("\(label) is BYTES but its values are in \(contents?.fieldName ?? "no field")")
        }
        guard elements.count == count else {
            throw .invalidInput("\(label) has \(elements.count) strings, its shape needs \(count)")
        }
        return try elements.enumerated().map { index, bytes throws(InferenceError) in
            guard let text = String(validating: bytes, as: UTF8.self) else {
                let bad = Self.firstInvalidUTF8(bytes)
                throw .invalidInput("\(label): element \(index) is not valid UTF-8 (at byte \(bad))")
            }
            return text
        }
    }

    /// The offset of the first byte where `bytes` stops being UTF-8.
    static func firstInvalidUTF8(_ bytes: ArraySlice<UInt8>) -> Int {
        var good = 0
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        var consumed = 0
        loop: while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar):
                consumed += UTF8.width(scalar)
                good = consumed
            case .emptyInput, .error: break loop
            }
        }
        return good
    }

    /// Token tensors for the texts, right-padded to the longest with the tokenizer's pad id and
    /// a zero mask; also each text's token count, for pooling.
    func tensors(for texts: [String]) throws(InferenceError) -> (inputs: [String: Tensor], lengths: [Int]) {
        let ids = texts.map { tokenizer.encode($0, maxLength: settings.maxLength) }
        let lengths = ids.map(\.count)
        let width = max(lengths.max() ?? 0, 1)
        var inputs: [String: Tensor] = [:]
        for (name, dataType) in tokenInputs {
            var values = [Int64](repeating: name == "input_ids" ? Int64(tokenizer.padID) : 0, count: texts.count * width)
            for (row, tokens) in ids.enumerated() {
                for (position, id) in tokens.enumerated() {
                    switch name {
                    case "input_ids": values[row * width + position] = Int64(id)
                    case "attention_mask": values[row * width + position] = 1
                    default: break  // token_type_ids: one segment
                    }
                }
            }
            if dataType == .int32 {
                var narrow = try Tensor(zeros: .int32, shape: [texts.count, width])
                narrow.withUnsafeMutableBytes { bytes in
                    let target = bytes.bindMemory(to: Int32.self)
                    for i in target.indices { target[i] = Int32(truncatingIfNeeded: values[i]) }
                }
                inputs[name] = narrow
            } else {
                inputs[name] = try Tensor(values, shape: [texts.count, width])
            }
        }
        return (inputs, lengths)
    }

    /// The mean over each text's own tokens of the pooled output [texts, positions, hidden],
    /// L2-normalised when asked (as sentence-transformers does: x / max(‖x‖, 1e-12)).
    func embeddings(_ outputs: [String: Tensor], lengths: [Int]) throws(InferenceError) -> [String: Tensor] {
        guard let hidden = outputs[pooledOutput], hidden.rank == 3, hidden.dataType == .float32, hidden.shape[0] == lengths.count else {
            throw InferenceError(.internal, "output '\(pooledOutput)' is not [\(lengths.count), positions, hidden] float32, cannot be mean-pooled")
        }
        let (positions, width) = (hidden.shape[1], hidden.shape[2])
        let values = hidden.scalars(as: Float.self)
        var pooled = [Float](repeating: 0, count: lengths.count * width)
        var sum = [Double](repeating: 0, count: width)
        for (row, length) in lengths.enumerated() {
            let count = min(length, positions)
            for i in sum.indices { sum[i] = 0 }
            for position in 0..<count {
                let base = (row * positions + position) * width
                for i in 0..<width { sum[i] += Double(values[base + i]) }
            }
            let mean = sum.map { $0 / Double(max(count, 1)) }
            let norm = settings.normalize ? max(mean.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12) : 1
            for i in 0..<width { pooled[row * width + i] = Float(mean[i] / norm) }
        }
        return [ModelConfig.TextInput.embeddingOutput: try Tensor(pooled, shape: [lengths.count, width])]
    }
}

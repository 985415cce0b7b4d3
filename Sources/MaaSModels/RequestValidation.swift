public import MaaSCore

extension ModelVersion {
    /// Checks a request against this model and turns its inputs into tensors: every error names
    /// the model, the input, what was expected and what was sent.
    /// - Returns: the inputs, the number of batch rows, the requested outputs, and what turns the
    ///   model's outputs into the response's (a text model's pooling).
    public func prepare(_ request: InferenceRequest) throws(InferenceError) -> Prepared {
        // Only errors use it: formatting it for every request cost an allocation each.
        var label: String { "model '\(name)' version \(version)" }
        if let text { return try prepareText(request, text, label: label) }
        let batching = config.maxBatchSize > 0
        if !request.rawInputContents.isEmpty {
            guard request.rawInputContents.count == request.inputs.count else {
                throw .invalidInput("\(label): \(request.rawInputContents.count) raw_input_contents for \(request.inputs.count) inputs")
            }
            if let typed = request.inputs.first(where: { $0.contents != nil }) {
                throw .invalidInput("\(label): input '\(typed.name)' has typed contents while raw_input_contents are also given; use one or the other")
            }
        }
        var tensors: [String: Tensor] = [:]
        var rows: Int?
        for (index, input) in request.inputs.enumerated() {
            guard let expected = config.inputs.first(where: { $0.name == input.name }) else {
                throw .invalidInput("\(label) has no input '\(input.name)'; its inputs are \(config.inputs.map(\.name))")
            }
            guard tensors[input.name] == nil else {
                throw .invalidInput("\(label): input '\(input.name)' is given twice")
            }
            guard input.datatype == expected.dataType.kserveName else {
                throw .invalidInput("\(label): input '\(input.name)' expects datatype \(expected.dataType.kserveName), got \(input.datatype)")
            }
            if let dim = input.shape.first(where: { $0 < 0 || $0 > Int64(Int32.max) }) {
                throw .invalidInput("\(label): input '\(input.name)' has invalid dimension \(dim) in shape \(input.shape)")
            }
            let shape = input.shape.map { Int($0) }
            // The batch dimension (any size, checked below) followed by the configured dims.
            let leading = batching ? 1 : 0
            var matches = shape.count == leading + expected.dims.count
            for position in 0..<expected.dims.count where matches {
                let wanted = expected.dims[position]
                matches = wanted < 0 || Int64(shape[leading + position]) == wanted
            }
            guard matches else {
                let expectedShape = (batching ? [Int64(-1)] : []) + expected.dims
                throw .invalidInput("\(label): input '\(input.name)' expects shape \(expectedShape), got \(input.shape)")
            }
            if batching {
                let batch = shape[0]
                guard batch >= 1, batch <= config.maxBatchSize else {
                    throw .invalidInput("\(label): input '\(input.name)' has batch size \(batch), allowed 1...\(config.maxBatchSize)")
                }
                if let rows, rows != batch {
                    throw .invalidInput("\(label): inputs disagree on the batch size (\(rows) and \(batch) for '\(input.name)')")
                }
                rows = batch
            }
            let count: Int
            do {
                count = try Shape.elementCount(shape)
            } catch {
                throw .invalidInput("\(label): input '\(input.name)' shape \(input.shape) has too many elements")
            }
            let elementSize = expected.dataType.byteSize!
            if !request.rawInputContents.isEmpty {
                let raw = request.rawInputContents[index]
                guard raw.count == count * elementSize else {
                    throw .invalidInput("\(label): input '\(input.name)' has \(raw.count) bytes of raw_input_contents, shape \(input.shape) of \(input.datatype) needs \(count * elementSize)")
                }
                tensors[input.name] = try raw.withUnsafeBufferPointer { buffer throws(InferenceError) in
                    try Tensor(dataType: expected.dataType, shape: shape, bytes: UnsafeRawBufferPointer(buffer))
                }
            } else if let contents = input.contents {
                tensors[input.name] = try Self.tensor(from: contents, type: expected.dataType, shape: shape, count: count, label: "\(label): input '\(input.name)'")
            } else {
                throw .invalidInput("\(label): input '\(input.name)' has no data (neither contents nor raw_input_contents)")
            }
        }
        if let missing = config.inputs.first(where: { tensors[$0.name] == nil }) {
            throw .invalidInput("\(label): missing input '\(missing.name)'")
        }
        if batching, let padding = config.paddedBatching {
            // Padded inputs share one length per request: it is what the outputs are trimmed to.
            var first: (name: String, length: Int)?
            for name in padding.padValues.keys.sorted() {
                guard let length = tensors[name]?.shape.dropFirst().first else { continue }
                if let first, first.length != length {
                    throw .invalidInput("\(label): inputs disagree on the sequence length (axis 1): \(first.length) for '\(first.name)', \(length) for '\(name)'")
                }
                first = first ?? (name, length)
            }
        }
        for output in request.outputs where !config.outputs.contains(where: { $0.name == output }) {
            throw .invalidInput("\(label) has no output '\(output)'; its outputs are \(config.outputs.map(\.name))")
        }
        return Prepared(inputs: tensors, rows: rows ?? 1, outputs: request.outputs, finish: nil)
    }

    public struct Prepared: Sendable {
        public var inputs: [String: Tensor]
        public var rows: Int
        public var outputs: [String]
        public var finish: (@Sendable ([String: Tensor]) throws(InferenceError) -> [String: Tensor])?
    }

    /// A text model's request: one BYTES input of texts, [batch, 1], tokenized here.
    private func prepareText(_ request: InferenceRequest, _ text: TextPipeline, label: @autoclosure () -> String) throws(InferenceError) -> Prepared {
        let name = text.settings.name
        guard request.inputs.count == 1, let input = request.inputs.first, input.name == name else {
            throw .invalidInput("\(label()) takes one input, '\(name)' (BYTES texts); got \(request.inputs.map(\.name))")
        }
        guard input.datatype == "BYTES" else {
            throw .invalidInput("\(label()): input '\(name)' expects datatype BYTES, got \(input.datatype)")
        }
        guard input.shape.count == 2, input.shape[1] == 1, input.shape[0] >= 1, input.shape[0] <= Int64(config.maxBatchSize) else {
            throw .invalidInput("\(label()): input '\(name)' expects shape [-1, 1] with 1...\(config.maxBatchSize) texts, got \(input.shape)")
        }
        if !request.rawInputContents.isEmpty, input.contents != nil {
            throw .invalidInput("\(label()): input '\(name)' has typed contents while raw_input_contents are also given; use one or the other")
        }
        for output in request.outputs where !config.outputs.contains(where: { $0.name == output }) {
            throw .invalidInput("\(label()) has no output '\(output)'; its outputs are \(config.outputs.map(\.name))")
        }
        let count = Int(input.shape[0])
        let texts = try TextPipeline.texts(
            raw: request.rawInputContents.first, contents: input.contents, count: count, label: "\(label()): input '\(name)'")
        let (tensors, lengths) = try text.tensors(for: texts)
        let finish: (@Sendable ([String: Tensor]) throws(InferenceError) -> [String: Tensor])?
        if text.settings.pooling == .mean {
            finish = { outputs throws(InferenceError) in try text.embeddings(outputs, lengths: lengths) }
        } else {
            finish = nil
        }
        return Prepared(inputs: tensors, rows: count, outputs: request.outputs, finish: finish)
    }

    private static func tensor(from contents: TypedContents, type: DataType, shape: [Int], count: Int, label: String) throws(InferenceError) -> Tensor {
        guard contents.count == count else {
            throw .invalidInput("\(label) has \(contents.count) values in \(contents.fieldName), shape \(shape) needs \(count)")
        }
        guard let tensor = try contents.tensor(type, shape: shape) else {
            throw .invalidInput("\(label) is \(type.kserveName) but its values are in \(contents.fieldName)")
        }
        return tensor
    }
}

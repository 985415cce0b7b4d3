internal import CMaaSProto
internal import CProtobufC
public import MaaSCore

/// The client side of the KServe v2 messages: requests out, responses in.
extension KServe {
    /// A `ModelInferRequest` with every input in `raw_input_contents` (the form Triton's
    /// clients send). The tensors' bytes are referenced, not copied, while packing. (Tensors hold
    /// fixed-size elements only, so BYTES inputs cannot be expressed here.)
    public static func encodeInferRequest(
        model: String, version: String, id: String, inputs: [(name: String, tensor: Tensor)], outputs: [String]
    ) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var request = Inference__ModelInferRequest()
        inference__model_infer_request__init(&request)
        request.model_name = arena.string(model)
        request.model_version = arena.string(version)
        request.id = arena.string(id)
        var tensors: [UnsafeMutablePointer<Inference__ModelInferRequest__InferInputTensor>?] = []
        for input in inputs {
            let tensor = arena.allocate(Inference__ModelInferRequest__InferInputTensor.self, count: 1)
            inference__model_infer_request__infer_input_tensor__init(tensor)
            tensor.pointee.name = arena.string(input.name)
            tensor.pointee.datatype = arena.string(input.tensor.dataType.kserveName)
            let shape = input.tensor.shape.map { Int64($0) }
            tensor.pointee.n_shape = shape.count
            tensor.pointee.shape = arena.array(shape)
            tensors.append(tensor)
        }
        request.n_inputs = tensors.count
        request.inputs = arena.array(tensors)
        let requested = outputs.map { name in
            let output = arena.allocate(Inference__ModelInferRequest__InferRequestedOutputTensor.self, count: 1)
            inference__model_infer_request__infer_requested_output_tensor__init(output)
            output.pointee.name = arena.string(name)
            return Optional(output)
        }
        request.n_outputs = requested.count
        request.outputs = arena.array(requested)
        let raw = inputs.map { input in
            ProtobufCBinaryData(len: input.tensor.byteCount, data: input.tensor.unsafeBaseAddress.assumingMemoryBound(to: UInt8.self))
        }
        request.n_raw_input_contents = raw.count
        request.raw_input_contents = arena.array(raw)
        let bytes = withUnsafePointer(to: &request.base) { packMessage($0) }
        withExtendedLifetime(inputs) {}
        return bytes
    }

    /// The `live`/`ready` flag of ServerLiveResponse, ServerReadyResponse or ModelReadyResponse
    /// (all three are `bool = 1`).
    public static func decodeFlag(_ bytes: UnsafeRawBufferPointer, message: String) throws(ProtobufDecodingError) -> Bool {
        guard let response = inference__server_live_response__unpack(nil, bytes.count, bytes.cBytes) else {
            throw ProtobufDecodingError(messageName: "inference.\(message)", byteCount: bytes.count)
        }
        defer { inference__server_live_response__free_unpacked(response, nil) }
        return response.pointee.live != 0
    }

    /// A ModelReadyRequest (name and version: the same fields as the other per-model requests).
    public static func encodeNameVersion(name: String, version: String) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var request = Inference__ModelReadyRequest()
        inference__model_ready_request__init(&request)
        request.name = arena.string(name)
        request.version = arena.string(version)
        return withUnsafePointer(to: &request.base) { packMessage($0) }
    }
}

extension InferenceResponse {
    /// Decodes a `ModelInferResponse` whose outputs are in `raw_output_contents` (what Triton and
    /// this server send) or in typed `contents`. Every output's byte count is checked against
    /// its shape and datatype before a tensor is made.
    public init(serializedBytes bytes: UnsafeRawBufferPointer) throws(InferenceError) {
        guard let response = inference__model_infer_response__unpack(nil, bytes.count, bytes.cBytes) else {
            throw InferenceError(.internal, "not a valid inference.ModelInferResponse (\(bytes.count) bytes)")
        }
        defer { inference__model_infer_response__free_unpacked(response, nil) }
        let r = response.pointee
        guard r.n_raw_output_contents == 0 || r.n_raw_output_contents == r.n_outputs else {
            throw InferenceError(.internal, "response has \(r.n_outputs) outputs but \(r.n_raw_output_contents) raw_output_contents")
        }
        var outputs: [(name: String, tensor: Tensor)] = []
        for index in 0..<r.n_outputs {
            guard let output = r.outputs[index]?.pointee else { continue }
            let name = String(cString: output.name), datatype = String(cString: output.datatype)
            guard let type = DataType(kserveName: datatype), let elementSize = type.byteSize else {
                throw InferenceError(.unimplemented, "output '\(name)' has datatype \(datatype), which this client does not decode")
            }
            var shape: [Int] = []
            for dim in UnsafeBufferPointer(start: output.shape, count: output.n_shape) {
                guard dim >= 0, dim <= Int64(Int32.max) else { throw InferenceError(.internal, "output '\(name)' has dimension \(dim)") }
                shape.append(Int(dim))
            }
            let count: Int
            do {
                count = try Shape.elementCount(shape)
            } catch {
                throw InferenceError(.internal, "output '\(name)' has shape \(shape), whose element count overflows")
            }
            if r.n_raw_output_contents > 0 {
                let raw = r.raw_output_contents[index]
                guard raw.len == count * elementSize else {
                    throw InferenceError(.internal, "output '\(name)': \(raw.len) bytes of raw_output_contents for shape \(shape) of \(datatype), which needs \(count * elementSize)")
                }
                outputs.append((name, try Tensor(dataType: type, shape: shape, bytes: UnsafeRawBufferPointer(start: raw.data, count: raw.len))))
            } else if let contents = output.contents.flatMap({ decodeContents($0.pointee) }) {
                guard contents.count == count else {
                    throw InferenceError(.internal, "output '\(name)' has \(contents.count) values in \(contents.fieldName) for shape \(shape)")
                }
                guard let tensor = try contents.tensor(type, shape: shape) else {
                    throw InferenceError(.internal, "output '\(name)' is \(datatype) but its values are in \(contents.fieldName)")
                }
                outputs.append((name, tensor))
            } else {
                throw InferenceError(.internal, "output '\(name)' carries no data")
            }
        }
        self.init(modelName: String(cString: r.model_name), modelVersion: String(cString: r.model_version), id: String(cString: r.id), outputs: outputs)
    }
}

public import MaaSCore
import MaaSGRPC
import MaaSJSON
public import MaaSProto
import NIOCore
import NIOHTTP1

/// KServe v2 REST on a ``RESTClient``: model metadata and inference with Triton's binary
/// tensor data extension (a JSON header of `Inference-Header-Content-Length` bytes, then the
/// tensors' raw bytes, both ways).
extension RESTClient {
    /// `GET /v2/models/{model}[/versions/{v}]`.
    public func metadata(model: String, version: String = "", timeout: Duration? = nil) async throws(RESTError) -> KServe.ModelMetadata {
        let object = try await json(.GET, Self.modelPath(model, version), timeout: timeout)
        func tensors(_ key: String) -> [TensorMetadata] {
            (object[key]?.array ?? []).map { entry in
                TensorMetadata(
                    name: entry["name"]?.string ?? "", datatype: entry["datatype"]?.string ?? "",
                    shape: (entry["shape"]?.array ?? []).map { $0.number?.int64 ?? -1 })
            }
        }
        return KServe.ModelMetadata(
            name: object["name"]?.string ?? model, versions: (object["versions"]?.array ?? []).compactMap(\.string),
            platform: object["platform"]?.string ?? "", inputs: tensors("inputs"), outputs: tensors("outputs"))
    }

    /// `max_batch_size` from `GET /v2/models/{model}/config`; nil when the server does not serve it.
    public func maxBatchSize(model: String, version: String = "", timeout: Duration? = nil) async -> Int? {
        guard let object = try? await json(.GET, Self.modelPath(model, version) + "/config", timeout: timeout) else { return nil }
        return object["max_batch_size"]?.number?.int64.flatMap { Int(exactly: $0) }
    }

    /// `POST /v2/models/{model}/infer` with every input as binary data and every output asked
    /// for as binary data (`outputs` empty: all of them, via `binary_data_output`).
    public func infer(
        model: String, version: String = "", inputs: [(name: String, tensor: Tensor)], outputs: [String] = [], timeout: Duration? = nil
    ) async throws(RESTError) -> InferenceResponse {
        let inputObjects: [JSONValue] = inputs.map { input in
            ["name": .string(input.name), "datatype": .string(input.tensor.dataType.kserveName),
             "shape": .array(input.tensor.shape.map { .int($0) }),
             "parameters": ["binary_data_size": .int(input.tensor.byteCount)]]
        }
        let header: JSONValue = outputs.isEmpty
            ? ["inputs": .array(inputObjects), "parameters": ["binary_data_output": true]]
            : ["inputs": .array(inputObjects), "outputs": .array(outputs.map { ["name": .string($0), "parameters": ["binary_data": true]] })]
        var writer = JSONWriter()
        writer.value(header)
        let json = writer.bytes
        var body = ByteBuffer()
        body.reserveCapacity(json.count + inputs.reduce(0) { $0 + $1.tensor.byteCount })
        body.writeBytes(json)
        for input in inputs { input.tensor.withUnsafeBytes { _ = body.writeBytes($0) } }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/octet-stream")
        headers.add(name: "inference-header-content-length", value: String(json.count))
        let response = try await request(.POST, Self.modelPath(model, version) + "/infer", headers: headers, body: body, timeout: timeout)
        guard response.status == 200 else { throw Self.error(response) }
        do throws(InferenceError) {
            return try Self.decodeInferResponse(response)
        } catch {
            throw RESTError(status: 200, message: "infer response: \(error.message)")
        }
    }

    static func decodeInferResponse(_ response: Response) throws(InferenceError) -> InferenceResponse {
        let bytes = Array(response.body.readableBytesView)
        let headerLength = response.headers.first(name: "inference-header-content-length").flatMap { Int($0) } ?? bytes.count
        guard headerLength >= 0, headerLength <= bytes.count else {
            throw InferenceError(.internal, "Inference-Header-Content-Length \(headerLength) but the body has \(bytes.count) bytes")
        }
        let header = bytes.withUnsafeBytes { raw in try? JSONReader.parse(UnsafeRawBufferPointer(rebasing: raw[0..<headerLength])) }
        guard let object = header, case .object = object else {
            throw InferenceError(.internal, "the JSON header is not an object")
        }
        var offset = headerLength
        var outputs: [(name: String, tensor: Tensor)] = []
        for entry in object["outputs"]?.array ?? [] {
            let name = entry["name"]?.string ?? ""
            guard let datatype = entry["datatype"]?.string, let type = DataType(kserveName: datatype), type.byteSize != nil else {
                throw InferenceError(.unimplemented, "output '\(name)' has datatype \(JSONValue.describe(entry["datatype"])), which this client does not decode")
            }
            var shape: [Int] = []
            for dimension in entry["shape"]?.array ?? [] {
                guard let value = dimension.number?.int64, let int = Int(exactly: value) else {
                    throw InferenceError(.internal, "output '\(name)' has shape entry \(JSONValue.describe(dimension)), not an integer")
                }
                shape.append(int)
            }
            if let sizeValue = entry["parameters"]?["binary_data_size"] {
                guard let size = sizeValue.number?.int64.flatMap({ Int(exactly: $0) }) else {
                    throw InferenceError(.internal, "output '\(name)' has binary_data_size \(JSONValue.describe(sizeValue)), not an integer")
                }
                guard size >= 0, size <= bytes.count - offset else {
                    throw InferenceError(.internal, "output '\(name)' has binary_data_size \(size), but \(bytes.count - offset) bytes are left")
                }
                let tensor = try bytes.withUnsafeBufferPointer { buffer throws(InferenceError) in
                    try Tensor(dataType: type, shape: shape, bytes: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[offset..<offset + size]))
                }
                offset += size
                outputs.append((name, tensor))
            } else if let data = entry["data"]?.array {
                guard data.allSatisfy({ $0.number != nil || $0.bool != nil }) else {
                    throw InferenceError(.internal, "output '\(name)' has data that are not numbers")
                }
                outputs.append((name, try InputFile.tensor(numbers: data, type: type, shape: shape, source: "output '\(name)'")))
            } else {
                throw InferenceError(.internal, "output '\(name)' has neither data nor binary_data_size")
            }
        }
        return InferenceResponse(
            modelName: object["model_name"]?.string ?? "", modelVersion: object["model_version"]?.string ?? "",
            id: object["id"]?.string ?? "", outputs: outputs)
    }

    private func json(_ method: HTTPMethod, _ path: String, timeout: Duration?) async throws(RESTError) -> JSONValue {
        let response = try await request(method, path, timeout: timeout)
        guard response.status == 200 else { throw Self.error(response) }
        guard let object = Self.parse(response), case .object = object else {
            throw RESTError(status: response.status, message: "\(path) did not answer a JSON object")
        }
        return object
    }

    /// The server's `{"error": "..."}` message, or the body as text.
    static func error(_ response: Response) -> RESTError {
        let message = parse(response)?["error"]?.string
        return RESTError(status: response.status, message: message ?? String(decoding: response.body.readableBytesView, as: UTF8.self))
    }

    private static func parse(_ response: Response) -> JSONValue? {
        response.body.withUnsafeReadableBytes { try? JSONReader.parse($0) }
    }

    private static func modelPath(_ model: String, _ version: String) -> String {
        let name = PercentEncoding.encodePathSegment(model)
        return "/v2/models/\(name)" + (version.isEmpty ? "" : "/versions/\(version)")
    }
}

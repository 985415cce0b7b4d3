import Foundation
public import MaaSCore
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
            (object[key] as? [[String: Any]] ?? []).map { entry in
                TensorMetadata(
                    name: entry["name"] as? String ?? "", datatype: entry["datatype"] as? String ?? "",
                    shape: (entry["shape"] as? [NSNumber] ?? []).map(\.int64Value))
            }
        }
        return KServe.ModelMetadata(
            name: object["name"] as? String ?? model, versions: object["versions"] as? [String] ?? [],
            platform: object["platform"] as? String ?? "", inputs: tensors("inputs"), outputs: tensors("outputs"))
    }

    /// `max_batch_size` from `GET /v2/models/{model}/config`; nil when the server does not serve it.
    public func maxBatchSize(model: String, version: String = "", timeout: Duration? = nil) async -> Int? {
        guard let object = try? await json(.GET, Self.modelPath(model, version) + "/config", timeout: timeout) else { return nil }
        return (object["max_batch_size"] as? NSNumber)?.intValue
    }

    /// `POST /v2/models/{model}/infer` with every input as binary data and every output asked
    /// for as binary data (`outputs` empty: all of them, via `binary_data_output`).
    public func infer(
        model: String, version: String = "", inputs: [(name: String, tensor: Tensor)], outputs: [String] = [], timeout: Duration? = nil
    ) async throws(RESTError) -> InferenceResponse {
        let header: [String: Any] = [
            "inputs": inputs.map { input -> [String: Any] in
                ["name": input.name, "datatype": input.tensor.dataType.kserveName, "shape": input.tensor.shape,
                 "parameters": ["binary_data_size": input.tensor.byteCount]]
            },
            outputs.isEmpty ? "parameters" : "outputs":
                outputs.isEmpty ? ["binary_data_output": true] as [String: Any] : outputs.map { ["name": $0, "parameters": ["binary_data": true]] } as Any,
        ]
        let json: Data
        do {
            json = try JSONSerialization.data(withJSONObject: header)
        } catch {
            throw RESTError(status: 0, message: "cannot encode the request header: \(error)")
        }
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
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes[0..<headerLength]))) as? [String: Any] else {
            throw InferenceError(.internal, "the JSON header is not an object")
        }
        var offset = headerLength
        var outputs: [(name: String, tensor: Tensor)] = []
        for entry in object["outputs"] as? [[String: Any]] ?? [] {
            let name = entry["name"] as? String ?? ""
            guard let datatype = entry["datatype"] as? String, let type = DataType(kserveName: datatype), type.byteSize != nil else {
                throw InferenceError(.unimplemented, "output '\(name)' has datatype \(entry["datatype"] ?? "none"), which this client does not decode")
            }
            let shape = (entry["shape"] as? [NSNumber] ?? []).map(\.intValue)
            if let size = ((entry["parameters"] as? [String: Any])?["binary_data_size"] as? NSNumber)?.intValue {
                guard size >= 0, size <= bytes.count - offset else {
                    throw InferenceError(.internal, "output '\(name)' has binary_data_size \(size), but \(bytes.count - offset) bytes are left")
                }
                let tensor = try bytes.withUnsafeBufferPointer { buffer throws(InferenceError) in
                    try Tensor(dataType: type, shape: shape, bytes: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[offset..<offset + size]))
                }
                offset += size
                outputs.append((name, tensor))
            } else if let data = entry["data"] as? [Any] {
                let numbers = data.compactMap { $0 as? NSNumber }
                guard numbers.count == data.count else { throw InferenceError(.internal, "output '\(name)' has data that are not numbers") }
                outputs.append((name, try InputFile.tensor(numbers: numbers, type: type, shape: shape, source: "output '\(name)'")))
            } else {
                throw InferenceError(.internal, "output '\(name)' has neither data nor binary_data_size")
            }
        }
        return InferenceResponse(
            modelName: object["model_name"] as? String ?? "", modelVersion: object["model_version"] as? String ?? "",
            id: object["id"] as? String ?? "", outputs: outputs)
    }

    private func json(_ method: HTTPMethod, _ path: String, timeout: Duration?) async throws(RESTError) -> [String: Any] {
        let response = try await request(method, path, timeout: timeout)
        guard response.status == 200 else { throw Self.error(response) }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any] else {
            throw RESTError(status: response.status, message: "\(path) did not answer a JSON object")
        }
        return object
    }

    /// The server's `{"error": "..."}` message, or the body as text.
    static func error(_ response: Response) -> RESTError {
        let data = Data(response.body.readableBytesView)
        let message = ((try? JSONSerialization.jsonObject(with: data)) as? [String: Any])?["error"] as? String
        return RESTError(status: response.status, message: message ?? String(decoding: data, as: UTF8.self))
    }

    private static func modelPath(_ model: String, _ version: String) -> String {
        let name = model.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? model
        return "/v2/models/\(name)" + (version.isEmpty ? "" : "/versions/\(version)")
    }
}

import Foundation
import MaaSCore

/// KServe v2 REST inference bodies: the JSON request (tensors as flat or nested `data`) with
/// Triton's binary tensor data extension (`Inference-Header-Content-Length`: a JSON header, then
/// the tensors' bytes in input order), and the response in the same two forms.
enum KServeJSON {
    /// A decoded request, and which outputs go back as binary data.
    struct Request {
        var request: InferenceRequest
        var binaryOutputs: Set<String>
        var allOutputsBinary: Bool
    }

    static func request(model: String, version: String, body: [UInt8], headerLength: Int?) throws(InferenceError) -> Request {
        let jsonEnd = headerLength ?? body.count
        guard jsonEnd >= 0, jsonEnd <= body.count else {
            throw .invalidInput("Inference-Header-Content-Length \(jsonEnd) is larger than the body (\(body.count) bytes)")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(body[0..<jsonEnd]))
        } catch {
            throw .invalidInput("the inference request is not valid JSON: \(error.localizedDescription)")
        }
        guard let root = object as? [String: Any] else { throw .invalidInput("the inference request must be a JSON object") }
        guard let inputs = root["inputs"] as? [[String: Any]], !inputs.isEmpty else {
            throw .invalidInput("the inference request needs 'inputs', a list of tensors")
        }
        var request = InferenceRequest(modelName: model, modelVersion: version, id: root["id"] as? String ?? "",
                                       parameters: try parameters(root["parameters"], "parameters"), inputs: [])
        var binaryOffset = jsonEnd
        for (index, input) in inputs.enumerated() {
            guard let name = input["name"] as? String else { throw .invalidInput("inputs[\(index)] needs a name") }
            guard let datatype = input["datatype"] as? String, let type = DataType(kserveName: datatype) else {
                throw .invalidInput("input '\(name)' needs a datatype (FP32, INT64, BYTES, ...), got \(input["datatype"] ?? "nothing")")
            }
            guard let shapeValues = input["shape"] as? [Any] else { throw .invalidInput("input '\(name)' needs a shape") }
            var shape: [Int64] = []
            for value in shapeValues {
                guard let number = value as? NSNumber, CFNumberLike.isNumeric(number), number.doubleValue == number.doubleValue.rounded(),
                    number.int64Value >= 0, number.int64Value <= Int64(Int32.max)
                else { throw .invalidInput("input '\(name)' has invalid shape \(shapeValues)") }
                shape.append(number.int64Value)
            }
            let count: Int
            do {
                count = try Shape.elementCount(shape.map(Int.init))
            } catch {
                throw .invalidInput("input '\(name)' shape \(shape) has too many elements")
            }
            let parameters = try Self.parameters(input["parameters"], "input '\(name)' parameters")
            let bytes: [UInt8]
            if case .int64(let size)? = parameters["binary_data_size"] {
                guard size >= 0, Int(size) <= body.count - binaryOffset else {
                    throw .invalidInput("input '\(name)' has binary_data_size \(size), but \(body.count - binaryOffset) bytes of binary data are left")
                }
                bytes = Array(body[binaryOffset..<binaryOffset + Int(size)])
                binaryOffset += Int(size)
            } else {
                guard let data = input["data"] else { throw .invalidInput("input '\(name)' has neither data nor binary_data_size") }
                bytes = try encode(flatten(data, name: name), type: type, count: count, name: name)
            }
            request.inputs.append(InferInput(name: name, datatype: datatype, shape: shape))
            request.rawInputContents.append(bytes)
        }
        guard binaryOffset == body.count else {
            throw .invalidInput("\(body.count - binaryOffset) bytes of binary data follow the inputs that no input claims")
        }
        var binary = Set<String>()
        for (index, output) in (root["outputs"] as? [[String: Any]] ?? []).enumerated() {
            guard let name = output["name"] as? String else { throw .invalidInput("outputs[\(index)] needs a name") }
            request.outputs.append(name)
            if case .bool(true)? = try Self.parameters(output["parameters"], "output '\(name)' parameters")["binary_data"] { binary.insert(name) }
        }
        var all = false
        if case .bool(true)? = request.parameters["binary_data_output"] { all = true }
        return Request(request: request, binaryOutputs: binary, allOutputsBinary: all)
    }

    private static func parameters(_ value: Any?, _ path: String) throws(InferenceError) -> [String: InferParameter] {
        guard let value else { return [:] }
        guard let object = value as? [String: Any] else { throw .invalidInput("\(path) must be an object") }
        var result: [String: InferParameter] = [:]
        for (key, entry) in object {
            switch entry {
            case let string as String: result[key] = .string(string)
            case let number as NSNumber where !CFNumberLike.isNumeric(number): result[key] = .bool(number.boolValue)
            case let number as NSNumber where number.doubleValue == number.doubleValue.rounded() && abs(number.doubleValue) < 9e15:
                result[key] = .int64(number.int64Value)
            case let number as NSNumber: result[key] = .double(number.doubleValue)
            default: throw .invalidInput("\(path).\(key) must be a string, number or boolean")
            }
        }
        return result
    }

    /// `data` as flat or nested arrays, in row-major order.
    private static func flatten(_ data: Any, name: String) throws(InferenceError) -> [Any] {
        guard let array = data as? [Any] else { throw .invalidInput("input '\(name)' data must be an array") }
        var flat: [Any] = []
        var stack: [[Any].SubSequence] = [array[...]]
        while var top = stack.popLast() {
            guard let first = top.popFirst() else { continue }
            stack.append(top)
            if let nested = first as? [Any] { stack.append(nested[...]) } else { flat.append(first) }
        }
        return flat
    }

    /// JSON values as the tensor's bytes (KServe's raw layout: BYTES elements length-prefixed).
    private static func encode(_ values: [Any], type: DataType, count: Int, name: String) throws(InferenceError) -> [UInt8] {
        guard values.count == count else {
            throw .invalidInput("input '\(name)' has \(values.count) values in data, its shape needs \(count)")
        }
        var bytes: [UInt8] = []
        func number(_ index: Int) throws(InferenceError) -> NSNumber {
            guard let number = values[index] as? NSNumber, CFNumberLike.isNumeric(number) else {
                throw .invalidInput("input '\(name)' data[\(index)] must be a number for \(type.kserveName), got \(values[index])")
            }
            return number
        }
        func append<T>(_ value: T) { withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) } }
        for index in values.indices {
            switch type {
            case .float32: append(try number(index).floatValue)
            case .float64: append(try number(index).doubleValue)
            case .int64: append(try number(index).int64Value)
            case .int32: append(try number(index).int32Value)
            case .int16: append(try number(index).int16Value)
            case .int8: append(try number(index).int8Value)
            case .uint64: append(try number(index).uint64Value)
            case .uint32: append(try number(index).uint32Value)
            case .uint16: append(try number(index).uint16Value)
            case .uint8: append(try number(index).uint8Value)
            case .bool:
                guard let flag = values[index] as? NSNumber, !CFNumberLike.isNumeric(flag) else {
                    throw .invalidInput("input '\(name)' data[\(index)] must be true or false for BOOL, got \(values[index])")
                }
                bytes.append(flag.boolValue ? 1 : 0)
            case .string:
                guard let text = values[index] as? String else {
                    throw .invalidInput("input '\(name)' data[\(index)] must be a string for BYTES, got \(values[index])")
                }
                let utf8 = Array(text.utf8)
                append(UInt32(utf8.count).littleEndian)
                bytes.append(contentsOf: utf8)
            case .float16, .bfloat16:
                throw .invalidInput("input '\(name)': \(type.kserveName) cannot be sent as JSON data; use binary data")
            }
        }
        return bytes
    }

    /// The response: the JSON alone, or the JSON header and then the binary outputs' bytes.
    static func response(_ response: InferenceResponse, binary: (String) -> Bool) -> (json: [UInt8], binary: [UInt8]) {
        var outputs: [[String: Any]] = []
        var blob: [UInt8] = []
        for (name, tensor) in response.outputs {
            var entry: [String: Any] = ["name": name, "datatype": tensor.dataType.kserveName, "shape": tensor.shape]
            // Half floats have no JSON number form: they always go as binary data.
            if binary(name) || [.float16, .bfloat16].contains(tensor.dataType) {
                tensor.withUnsafeBytes { blob.append(contentsOf: $0) }
                entry["parameters"] = ["binary_data_size": tensor.byteCount]
            } else {
                entry["data"] = jsonValues(tensor)
            }
            outputs.append(entry)
        }
        var root: [String: Any] = ["model_name": response.modelName, "model_version": response.modelVersion, "outputs": outputs]
        if !response.id.isEmpty { root["id"] = response.id }
        let json = (try? JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])).map(Array.init) ?? Array("{}".utf8)
        return (json, blob)
    }

    private static func jsonValues(_ tensor: Tensor) -> [NSNumber] {
        switch tensor.dataType {
        case .float32: tensor.scalars(as: Float.self).map { NSNumber(value: Double($0)) }
        case .float64: tensor.scalars(as: Double.self).map { NSNumber(value: $0) }
        case .int64: tensor.scalars(as: Int64.self).map { NSNumber(value: $0) }
        case .int32: tensor.scalars(as: Int32.self).map { NSNumber(value: Int64($0)) }
        case .int16: tensor.scalars(as: Int16.self).map { NSNumber(value: Int64($0)) }
        case .int8: tensor.scalars(as: Int8.self).map { NSNumber(value: Int64($0)) }
        case .uint64: tensor.scalars(as: UInt64.self).map { NSNumber(value: $0) }
        case .uint32: tensor.scalars(as: UInt32.self).map { NSNumber(value: Int64($0)) }
        case .uint16: tensor.scalars(as: UInt16.self).map { NSNumber(value: Int64($0)) }
        case .uint8: tensor.scalars(as: UInt8.self).map { NSNumber(value: Int64($0)) }
        case .bool: tensor.scalars(as: UInt8.self).map { NSNumber(value: $0 != 0) }
        case .float16, .bfloat16, .string: []
        }
    }
}

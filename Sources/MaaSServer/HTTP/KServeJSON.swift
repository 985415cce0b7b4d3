import MaaSCore
import MaaSJSON

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

    static func request(model: String, version: String, body: UnsafeRawBufferPointer, headerLength: Int?) throws(InferenceError) -> Request {
        let jsonEnd = headerLength ?? body.count
        guard jsonEnd >= 0, jsonEnd <= body.count else {
            throw .invalidInput("Inference-Header-Content-Length \(jsonEnd) is larger than the body (\(body.count) bytes)")
        }
        let header = try Header.read(UnsafeRawBufferPointer(rebasing: body[..<jsonEnd]))
        var request = InferenceRequest(modelName: model, modelVersion: version, id: header.id,
                                       parameters: try parameters(header.parameters, "parameters"), inputs: [])
        guard !header.inputs.isEmpty else { throw .invalidInput("the inference request needs 'inputs', a list of tensors") }
        var binaryOffset = jsonEnd
        for (index, input) in header.inputs.enumerated() {
            guard let name = input.name else { throw .invalidInput("inputs[\(index)] needs a name") }
            guard let datatype = input.datatype?.string, let type = DataType(kserveName: datatype) else {
                throw .invalidInput("input '\(name)' needs a datatype (FP32, INT64, BYTES, ...), got \(describe(input.datatype))")
            }
            let shape = try Self.shape(input.shape, name)
            let count: Int
            do {
                count = try Shape.elementCount(shape.map(Int.init))
            } catch {
                throw .invalidInput("input '\(name)' shape \(shape) has too many elements")
            }
            let parameters = try Self.parameters(input.parameters, "input '\(name)' parameters")
            let bytes: [UInt8]
            if let size = parameters["binary_data_size"] {
                guard case .int64(let size) = size, size >= 0 else {
                    throw .invalidInput("input '\(name)' binary_data_size must be a byte count (a whole number from 0)")
                }
                guard Int(size) <= body.count - binaryOffset else {
                    throw .invalidInput("input '\(name)' has binary_data_size \(size), but \(body.count - binaryOffset) bytes of binary data are left")
                }
                bytes = Array(body[binaryOffset..<binaryOffset + Int(size)])
                binaryOffset += Int(size)
            } else {
                guard let range = input.data else {
                    throw .invalidInput("input '\(name)' has neither data nor binary_data_size")
                }
                var decoder = TensorData(name: name, type: type, expected: count, bodyBytes: range.count)
                do {
                    try JSONReader.walkNested(body, range, &decoder)
                } catch let error as InferenceError {
                    throw error
                } catch {
                    throw .invalidInput("input '\(name)' data: \(error)")
                }
                guard decoder.count == count else {
                    throw .invalidInput("input '\(name)' has \(decoder.count) values in data, its shape needs \(count)")
                }
                bytes = decoder.bytes
            }
            request.inputs.append(InferInput(name: name, datatype: datatype, shape: shape))
            request.rawInputContents.append(bytes)
        }
        guard binaryOffset == body.count else {
            throw .invalidInput("\(body.count - binaryOffset) bytes of binary data follow the inputs that no input claims")
        }
        var binary = Set<String>()
        for (index, output) in header.outputs.enumerated() {
            guard let name = output.name else { throw .invalidInput("outputs[\(index)] needs a name") }
            request.outputs.append(name)
            if case .bool(true)? = try Self.parameters(output.parameters, "output '\(name)' parameters")["binary_data"] { binary.insert(name) }
        }
        var all = false
        if case .bool(true)? = request.parameters["binary_data_output"] { all = true }
        return Request(request: request, binaryOutputs: binary, allOutputsBinary: all)
    }

    /// The JSON part of a request, read in one pass without a tree: tensor `data` is kept as its
    /// byte range, and fields we do not know are skipped (checked, not built).
    private struct Header {
        struct Tensor {
            var name: String?
            var datatype: JSONValue?
            var shape: JSONValue?
            var parameters: JSONValue?
            var data: Range<Int>?
        }

        var id = ""
        var parameters: JSONValue?
        var inputs: [Tensor] = []
        var outputs: [Tensor] = []

        static func read(_ bytes: UnsafeRawBufferPointer) throws(InferenceError) -> Header {
            var header = Header()
            var reader = JSONReader(bytes)
            do {
                guard reader.nextKind() == .object else {
                    let value = try reader.readValue()
                    try reader.finish()
                    throw InferenceError.invalidInput("the inference request must be a JSON object, got \(value.kind)")
                }
                try reader.readObject { reader, key in
                    if key == "inputs" {
                        guard reader.nextKind() == .array else { throw InferenceError.invalidInput("the inference request needs 'inputs', a list of tensors") }
                        try reader.readArray { reader, index in header.inputs.append(try tensor(&reader, "inputs[\(index)]")) }
                    } else if key == "outputs" {
                        guard reader.nextKind() == .array else { throw InferenceError.invalidInput("'outputs' must be a list, got \(try reader.readValue().kind)") }
                        try reader.readArray { reader, index in header.outputs.append(try tensor(&reader, "outputs[\(index)]")) }
                    } else if key == "id" {
                        let value = try reader.readValue()
                        guard let text = value.string else { throw InferenceError.invalidInput("the request's id must be a string, got \(value.kind)") }
                        header.id = text
                    } else if key == "parameters" {
                        header.parameters = try reader.readValue()
                    } else {
                        _ = try reader.readRaw()
                    }
                }
                try reader.finish()
            } catch let error as InferenceError {
                throw error
            } catch {
                throw .invalidInput("the inference request is not valid JSON: \(error)")
            }
            return header
        }

        private static func tensor(_ reader: inout JSONReader, _ path: String) throws -> Tensor {
            guard reader.nextKind() == .object else { throw InferenceError.invalidInput("\(path) must be an object, got \(try reader.readValue().kind)") }
            var tensor = Tensor()
            try reader.readObject { reader, key in
                if key == "name" {
                    tensor.name = try reader.readValue().string
                } else if key == "datatype" {
                    tensor.datatype = try reader.readValue()
                } else if key == "shape" {
                    tensor.shape = try reader.readValue()
                } else if key == "parameters" {
                    tensor.parameters = try reader.readValue()
                } else if key == "data" {
                    tensor.data = try reader.readRaw()
                } else {
                    _ = try reader.readRaw()
                }
            }
            return tensor
        }
    }

    private static func shape(_ value: JSONValue?, _ name: String) throws(InferenceError) -> [Int64] {
        guard let dims = value?.array else { throw .invalidInput("input '\(name)' needs a shape, a list of dimensions") }
        var shape: [Int64] = []
        shape.reserveCapacity(dims.count)
        for dim in dims {
            guard let size = dim.number?.int64, size >= 0, size <= Int64(Int32.max) else {
                throw .invalidInput("input '\(name)' has invalid shape \(dims.map(describe)): dimensions are whole numbers from 0 to \(Int32.max)")
            }
            shape.append(size)
        }
        return shape
    }

    private static func parameters(_ value: JSONValue?, _ path: String) throws(InferenceError) -> [String: InferParameter] {
        guard let value else { return [:] }
        guard let members = value.members else { throw .invalidInput("\(path) must be an object, got \(value.kind)") }
        var result: [String: InferParameter] = [:]
        for (key, entry) in members {
            switch entry {
            case .string(let text): result[key] = .string(text)
            case .bool(let flag): result[key] = .bool(flag)
            case .number(.int(let number)): result[key] = .int64(number)
            case .number(.uint(let number)): result[key] = .uint64(number)
            case .number(.double(let number)): result[key] = .double(number)
            default: throw .invalidInput("\(path).\(key) must be a string, number or boolean, got \(entry.kind)")
            }
        }
        return result
    }

    static func describe(_ value: JSONValue?) -> String { JSONValue.describe(value) }

    /// JSON `data` (flat or nested, row-major) as the tensor's bytes in KServe's raw layout
    /// (BYTES elements length-prefixed). Stops at the first value past the shape's count, so a
    /// body cannot make it hold more than the tensor.
    private struct TensorData: NestedArrayVisitor {
        let name: String
        let type: DataType
        let expected: Int
        var bytes: [UInt8] = []
        var count = 0

        init(name: String, type: DataType, expected: Int, bodyBytes: Int) {
            self.name = name
            self.type = type
            self.expected = expected
            // Each value takes at least two bytes of the body ("0,"): never reserve more than it can fill.
            bytes.reserveCapacity(min(expected, bodyBytes / 2 + 1) * (type.byteSize ?? 8))
        }

        mutating func element(_ value: JSONValue, at path: [Int]) throws {
            guard count < expected else {
                throw InferenceError.invalidInput("input '\(name)' has more values in data than its shape's \(expected)")
            }
            let index = count
            count += 1
            func refuse(_ wanted: String) -> InferenceError {
                .invalidInput("input '\(name)' data[\(index)] must be \(wanted) for \(type.kserveName), got \(describe(value))")
            }
            func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
                guard let number = value.number else { throw refuse("a whole number") }
                let exact: T? = switch number {
                case .int(let v): T(exactly: v)
                case .uint(let v): T(exactly: v)
                case .double(let v): T(exactly: v)
                }
                guard let exact else { throw refuse("a whole number from \(T.min) to \(T.max)") }
                return exact
            }
            switch type {
            case .float32:
                guard let number = value.number else { throw refuse("a number") }
                let float = Float(number.double)
                guard float.isFinite else { throw refuse("a number within FP32's range") }
                append(float)
            case .float64:
                guard let number = value.number else { throw refuse("a number") }
                append(number.double)
            case .int64: append(try integer(Int64.self))
            case .int32: append(try integer(Int32.self))
            case .int16: append(try integer(Int16.self))
            case .int8: append(try integer(Int8.self))
            case .uint64: append(try integer(UInt64.self))
            case .uint32: append(try integer(UInt32.self))
            case .uint16: append(try integer(UInt16.self))
            case .uint8: append(try integer(UInt8.self))
            case .bool:
                guard let flag = value.bool else { throw refuse("true or false") }
                bytes.append(flag ? 1 : 0)
            case .string:
                guard let text = value.string else { throw refuse("a string") }
                append(UInt32(text.utf8.count).littleEndian)
                bytes.append(contentsOf: text.utf8)
            case .float16, .bfloat16:
                throw InferenceError.invalidInput("input '\(name)': \(type.kserveName) cannot be sent as JSON data; use binary data")
            }
        }

        private mutating func append<T>(_ value: T) {
            withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) }
        }
    }

    /// The response: the JSON alone, or the JSON header and then the binary outputs' bytes.
    static func response(_ response: InferenceResponse, binary: (String) -> Bool) -> (json: [UInt8], binary: [UInt8]) {
        var json = JSONWriter(capacity: 128 + response.outputs.reduce(0) { $0 + $1.tensor.elementCount * 12 })
        var blob: [UInt8] = []
        json.beginObject()
        json.key("model_name")
        json.string(response.modelName)
        json.key("model_version")
        json.string(response.modelVersion)
        if !response.id.isEmpty {
            json.key("id")
            json.string(response.id)
        }
        json.key("outputs")
        json.beginArray()
        for (name, tensor) in response.outputs {
            json.beginObject()
            json.key("name")
            json.string(name)
            json.key("datatype")
            json.string(tensor.dataType.kserveName)
            json.key("shape")
            json.beginArray()
            for dim in tensor.shape { json.int(dim) }
            json.endArray()
            // Half floats have no JSON number form: they always go as binary data.
            if binary(name) || [.float16, .bfloat16, .string].contains(tensor.dataType) {
                tensor.withUnsafeBytes { blob.append(contentsOf: $0) }
                json.key("parameters")
                json.beginObject()
                json.key("binary_data_size")
                json.int(tensor.byteCount)
                json.endObject()
            } else {
                json.key("data")
                json.beginArray()
                writeValues(tensor, &json)
                json.endArray()
            }
            json.endObject()
        }
        json.endArray()
        json.endObject()
        return (json.bytes, blob)
    }

    private static func writeValues(_ tensor: Tensor, _ json: inout JSONWriter) {
        switch tensor.dataType {
        case .float32: for v in tensor.scalars(as: Float.self) { json.float(v) }
        case .float64: for v in tensor.scalars(as: Double.self) { json.double(v) }
        case .int64: for v in tensor.scalars(as: Int64.self) { json.int(v) }
        case .int32: for v in tensor.scalars(as: Int32.self) { json.int(v) }
        case .int16: for v in tensor.scalars(as: Int16.self) { json.int(v) }
        case .int8: for v in tensor.scalars(as: Int8.self) { json.int(v) }
        case .uint64: for v in tensor.scalars(as: UInt64.self) { json.int(v) }
        case .uint32: for v in tensor.scalars(as: UInt32.self) { json.int(v) }
        case .uint16: for v in tensor.scalars(as: UInt16.self) { json.int(v) }
        case .uint8: for v in tensor.scalars(as: UInt8.self) { json.int(v) }
        case .bool: for v in tensor.scalars(as: UInt8.self) { json.bool(v != 0) }
        case .float16, .bfloat16, .string: break
        }
    }
}

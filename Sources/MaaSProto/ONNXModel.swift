internal import CMaaSProto
internal import CProtobufC
import Glibc
public import MaaSCore

/// Reads ONNX `ModelProto` files (as `torch.onnx.export` and skl2onnx write them) into a
/// ``ModelGraph``, materializing every initializer, including weights stored as external data.
///
/// Every size that comes from the file is checked before it is trusted: dims, element counts,
/// byte lengths, external offsets. Errors name the tensor, node or file and say what was expected.
public enum ONNXModel {
    /// Loads `path`; external data files are looked up beside it.
    public static func load(path: String) throws(InferenceError) -> ModelGraph {
        let bytes = try FileBytes.read(path: path)
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        return try bytes.withUnsafeBufferPointer { buffer throws(InferenceError) in
            try decode(UnsafeRawBufferPointer(buffer), externalDataDirectory: directory, source: path)
        }
    }

    /// Decodes a serialized `ModelProto`. External data is read from `externalDataDirectory`.
    public static func decode(
        _ bytes: UnsafeRawBufferPointer,
        externalDataDirectory: String? = nil,
        source: String = "model"
    ) throws(InferenceError) -> ModelGraph {
        let malformed = InferenceError.invalidModel(
            "\(source): not a valid ONNX model (protobuf decoding failed: truncated or not an ONNX file, \(bytes.count) bytes)")
        // protobuf-c recurses once per nested message: the depth is read first, without recursion.
        switch withUnsafePointer(to: onnx__model_proto__descriptor, { ProtobufNesting.check(bytes, $0) }) {
        case .within: break
        case .tooDeep(let offset):
            throw .invalidModel(
                "\(source): messages nest more than \(ProtobufNesting.maxDepth) deep at byte \(offset) (subgraphs inside subgraphs); not a model this server loads")
        case .malformed: throw malformed
        }
        guard let model = onnx__model_proto__unpack(nil, bytes.count, bytes.cBytes) else { throw malformed }
        defer { onnx__model_proto__free_unpacked(model, nil) }
        let context = DecodeContext(source: source, externalDataDirectory: externalDataDirectory)
        return try context.graph(from: model)
    }
}

private struct DecodeContext {
    let source: String
    let externalDataDirectory: String?

    func graph(from model: UnsafeMutablePointer<Onnx__ModelProto>) throws(InferenceError) -> ModelGraph {
        guard let graph = model.pointee.graph else {
            throw .invalidModel("\(source): the model has no graph (is this an ONNX file?)")
        }
        var opsets: [String: Int] = [:]
        for entry in array(model.pointee.opset_import, model.pointee.n_opset_import) {
            let domain = string(entry.pointee.domain)
            opsets[domain == "ai.onnx" ? "" : domain] = Int(entry.pointee.version)
        }
        if opsets.isEmpty {
            throw .invalidModel("\(source): the model declares no opset_import")
        }
        var metadata: [String: String] = [:]
        for entry in array(model.pointee.metadata_props, model.pointee.n_metadata_props) {
            metadata[string(entry.pointee.key)] = string(entry.pointee.value)
        }
        let g = graph.pointee
        var initializers: [String: Tensor] = [:]
        for tensor in array(g.initializer, g.n_initializer) {
            let name = string(tensor.pointee.name)
            guard !name.isEmpty else { throw .invalidModel("\(source): an initializer has no name") }
            initializers[name] = try self.tensor(tensor, what: "initializer '\(name)'")
        }
        var nodes: [Node] = []
        nodes.reserveCapacity(g.n_node)
        for (index, node) in array(g.node, g.n_node).enumerated() {
            nodes.append(try self.node(node, index: index))
        }
        let initializerNames = Set(initializers.keys)
        // Older exporters list initializers among the inputs too; they are not inputs to feed.
        let inputs = try array(g.input, g.n_input)
            .map { info throws(InferenceError) in try valueInfo(info, what: "graph input") }
            .filter { !initializerNames.contains($0.name) }
        var outputs: [ValueInfo] = []
        for info in array(g.output, g.n_output) {
            do {
                outputs.append(try valueInfo(info, what: "graph output"))
            } catch {
                throw nonTensorOutput(string(info.pointee.name), nodes: nodes) ?? error
            }
        }
        return ModelGraph(
            name: string(g.name), producer: [string(model.pointee.producer_name), string(model.pointee.producer_version)].filter { !$0.isEmpty }.joined(separator: " "),
            opsets: opsets, inputs: inputs, outputs: outputs, initializers: initializers, nodes: nodes, metadata: metadata)
    }

    /// For an output that is a sequence or a map: which node makes it, and for scikit-learn's
    /// ZipMap (probabilities as a list of {label: probability}), how to export without it.
    func nonTensorOutput(_ name: String, nodes: [Node]) -> InferenceError? {
        guard let producer = nodes.first(where: { $0.outputs.contains(name) }) else { return nil }
        let hint = producer.opType == "ZipMap"
            ? "; export the classifier with skl2onnx's options={id(model): {'zipmap': False}} (or convert_sklearn(..., options={'zipmap': False})) to get the probabilities as a tensor"
            : ""
        return .unsupported(
            "\(source): graph output '\(name)' is not a tensor (sequences, maps and optionals are not supported): it is made by node '\(producer.name)' (\(producer.opType))\(hint)")
    }

    func node(_ node: UnsafeMutablePointer<Onnx__NodeProto>, index: Int) throws(InferenceError) -> Node {
        let n = node.pointee
        var result = Node(
            name: string(n.name), opType: string(n.op_type), domain: string(n.domain),
            inputs: strings(n.input, n.n_input), outputs: strings(n.output, n.n_output))
        if result.name.isEmpty { result.name = "#\(index)" }
        for attribute in array(n.attribute, n.n_attribute) {
            let name = string(attribute.pointee.name)
            result.attributes[name] = try self.attribute(attribute, what: "attribute '\(name)' of \(result.label)")
        }
        return result
    }

    func attribute(_ attribute: UnsafeMutablePointer<Onnx__AttributeProto>, what: String) throws(InferenceError) -> Attribute {
        let a = attribute.pointee
        switch a.type {
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return .float(a.f)
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return .int(Int(a.i))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return .string(bytesString(a.s))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
            return .floats(Array(UnsafeBufferPointer(start: a.floats, count: a.n_floats)))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
            return .ints(UnsafeBufferPointer(start: a.ints, count: a.n_ints).map { Int($0) })
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
            return .strings(UnsafeBufferPointer(start: a.strings, count: a.n_strings).map(bytesString))
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR:
            guard let tensor = a.t else { throw .invalidModel("\(source): \(what) is a tensor attribute without a tensor") }
            return .tensor(try self.tensor(tensor, what: what))
        default:
            return .unsupported("attribute type \(a.type.rawValue)")
        }
    }

    func valueInfo(_ info: UnsafeMutablePointer<Onnx__ValueInfoProto>, what: String) throws(InferenceError) -> ValueInfo {
        let name = string(info.pointee.name)
        guard let type = info.pointee.type, type.pointee.value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE,
            let tensorType = type.pointee.tensor_type
        else {
            throw .unsupported("\(source): \(what) '\(name)' is not a tensor (sequences, maps and optionals are not supported)")
        }
        guard let dataType = DataType(onnxCode: tensorType.pointee.elem_type) else {
            throw .unsupported("\(source): \(what) '\(name)' has unsupported element type \(tensorType.pointee.elem_type)")
        }
        var shape: [ValueInfo.Dimension] = []
        if let tensorShape = tensorType.pointee.shape {
            for dim in array(tensorShape.pointee.dim, tensorShape.pointee.n_dim) {
                switch dim.pointee.value_case {
                case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE:
                    let value = dim.pointee.dim_value
                    guard value >= 0, value <= Int32.max else {
                        throw .invalidModel("\(source): \(what) '\(name)' has dimension \(value)")
                    }
                    shape.append(.fixed(Int(value)))
                case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM:
                    shape.append(.symbolic(string(dim.pointee.dim_param)))
                default:
                    shape.append(.symbolic(""))
                }
            }
        }
        return ValueInfo(name: name, dataType: dataType, shape: shape)
    }

    /// Materializes a TensorProto from raw_data, the typed arrays, or external data.
    func tensor(_ tensor: UnsafeMutablePointer<Onnx__TensorProto>, what: String) throws(InferenceError) -> Tensor {
        let t = tensor.pointee
        guard let dataType = DataType(onnxCode: t.data_type), dataType.byteSize != nil,
            dataType != .float16, dataType != .bfloat16
        else {
            throw .unsupported("\(source): \(what) has unsupported data type \(t.data_type)")
        }
        var dims: [Int] = []
        for dim in UnsafeBufferPointer(start: t.dims, count: t.n_dims) {
            guard dim >= 0, dim <= Int64(Int32.max) else {
                throw .invalidModel("\(source): \(what) has dimension \(dim)")
            }
            dims.append(Int(dim))
        }
        let count: Int
        do {
            count = try Shape.elementCount(dims)
        } catch {
            throw .invalidModel("\(source): \(what) has dims \(dims), whose element count overflows")
        }
        let expectedBytes = count * dataType.byteSize!

        if t.data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL {
            return try external(t, dataType: dataType, dims: dims, expectedBytes: expectedBytes, what: what)
        }
        if t.raw_data.len > 0 || count == 0 {
            guard t.raw_data.len == expectedBytes else {
                throw .invalidModel("\(source): \(what) has \(t.raw_data.len) bytes of raw_data but dims \(dims) of \(dataType) need \(expectedBytes)")
            }
            return try Tensor(dataType: dataType, shape: dims, bytes: UnsafeRawBufferPointer(start: t.raw_data.data, count: expectedBytes))
        }
        // Typed values are checked against the dims before anything is allocated for them.
        var result: Tensor?
        let file = source
        func fill<Source, Target>(_ values: UnsafePointer<Source>?, _ available: Int, field: String, _ convert: (Source) -> Target) throws(InferenceError) {
            guard available == count else {
                throw .invalidModel("\(file): \(what) has \(available) values in \(field) but dims \(dims) need \(count)")
            }
            var tensor = try Tensor(zeros: dataType, shape: dims)
            defer { result = tensor }
            tensor.withUnsafeMutableBytes { bytes in
                let target = bytes.bindMemory(to: Target.self)
                for index in 0..<count { target[index] = convert(values![index]) }
            }
        }
        switch dataType {
        case .float32: try fill(t.float_data, t.n_float_data, field: "float_data") { $0 }
        case .float64: try fill(t.double_data, t.n_double_data, field: "double_data") { $0 }
        case .int64: try fill(t.int64_data, t.n_int64_data, field: "int64_data") { $0 }
        case .uint64, .uint32: 
            if dataType == .uint64 {
                try fill(t.uint64_data, t.n_uint64_data, field: "uint64_data") { $0 }
            } else {
                try fill(t.uint64_data, t.n_uint64_data, field: "uint64_data") { UInt32(truncatingIfNeeded: $0) }
            }
        case .int32: try fill(t.int32_data, t.n_int32_data, field: "int32_data") { $0 }
        case .int16: try fill(t.int32_data, t.n_int32_data, field: "int32_data") { Int16(truncatingIfNeeded: $0) }
        case .uint16: try fill(t.int32_data, t.n_int32_data, field: "int32_data") { UInt16(truncatingIfNeeded: $0) }
        case .int8: try fill(t.int32_data, t.n_int32_data, field: "int32_data") { Int8(truncatingIfNeeded: $0) }
        case .uint8, .bool: try fill(t.int32_data, t.n_int32_data, field: "int32_data") { UInt8(truncatingIfNeeded: $0) }
        case .float16, .bfloat16, .string: throw .unsupported("\(source): \(what) has unsupported data type \(dataType)")
        }
        return result!
    }

    func external(_ t: Onnx__TensorProto, dataType: DataType, dims: [Int], expectedBytes: Int, what: String) throws(InferenceError) -> Tensor {
        var location: String?
        var offset = 0
        var length: Int?
        for entry in array(t.external_data, t.n_external_data) {
            let key = string(entry.pointee.key)
            let value = string(entry.pointee.value)
            switch key {
            case "location": location = value
            case "offset":
                guard let parsed = Int(value), parsed >= 0 else { throw .invalidModel("\(source): \(what) has external offset '\(value)'") }
                offset = parsed
            case "length":
                guard let parsed = Int(value), parsed >= 0 else { throw .invalidModel("\(source): \(what) has external length '\(value)'") }
                length = parsed
            default: break
            }
        }
        guard let location, !location.isEmpty else {
            throw .invalidModel("\(source): \(what) is stored externally but names no location")
        }
        // The location comes from the file: it must stay inside the model's directory.
        guard !location.hasPrefix("/"), !location.split(separator: "/").contains("..") else {
            throw .invalidModel("\(source): \(what) has external location '\(location)' outside the model's directory")
        }
        guard let directory = externalDataDirectory else {
            throw .invalidModel("\(source): \(what) is stored in external file '\(location)', but the model was not loaded from a directory")
        }
        if let length, length != expectedBytes {
            throw .invalidModel("\(source): \(what) has external length \(length) but dims \(dims) of \(dataType) need \(expectedBytes) bytes")
        }
        let path = directory + "/" + location
        return try FileBytes.withRange(path: path, offset: offset, count: expectedBytes, what: "\(source): \(what)") { bytes throws(InferenceError) in
            try Tensor(dataType: dataType, shape: dims, bytes: bytes)
        }
    }

    // MARK: protobuf-c helpers

    func array<T>(_ pointer: UnsafeMutablePointer<UnsafeMutablePointer<T>?>?, _ count: Int) -> [UnsafeMutablePointer<T>] {
        guard let pointer else { return [] }
        return (0..<count).compactMap { pointer[$0] }
    }

    func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String {
        pointer.map { String(cString: $0) } ?? ""
    }

    func strings(_ pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ count: Int) -> [String] {
        guard let pointer else { return [] }
        return (0..<count).map { string(pointer[$0]) }
    }
}

private func bytesString(_ data: ProtobufCBinaryData) -> String {
    String(decoding: UnsafeRawBufferPointer(start: data.data, count: data.len), as: UTF8.self)
}

/// File access with sizes checked before anything is read.
enum FileBytes {
    static func read(path: String) throws(InferenceError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .invalidModel("\(path): cannot open (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .invalidModel("\(path): cannot stat") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .invalidModel("\(path): not a regular file") }
        let size = Int(info.st_size)
        // protobuf messages cannot exceed 2 GiB; larger weights belong in external data.
        guard size <= Int(Int32.max) else { throw .invalidModel("\(path): \(size) bytes is larger than an ONNX protobuf can be (2 GiB)") }
        var bytes = [UInt8](repeating: 0, count: size)
        let got = bytes.withUnsafeMutableBytes { preadFully(fd, $0, offset: 0) }
        guard got == size else { throw .invalidModel("\(path): read \(got) of \(size) bytes") }
        return bytes
    }

    static func withRange<Result>(
        path: String, offset: Int, count: Int, what: String,
        _ body: (UnsafeRawBufferPointer) throws(InferenceError) -> Result
    ) throws(InferenceError) -> Result {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .invalidModel("\(what): external data file '\(path)' cannot be opened (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .invalidModel("\(what): cannot stat '\(path)'") }
        let size = Int(info.st_size)
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= size else {
            throw .invalidModel("\(what): external range \(offset)..<\(offset &+ count) is past the end of '\(path)' (\(size) bytes)")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 64)
        defer { buffer.deallocate() }
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
        let got = preadFully(fd, target, offset: offset)
        guard got == count else { throw .invalidModel("\(what): read \(got) of \(count) bytes from '\(path)'") }
        return try body(UnsafeRawBufferPointer(target))
    }

    private static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int) -> Int {
        var done = 0
        while done < buffer.count {
            let got = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if got < 0 && errno == EINTR { continue }
            if got <= 0 { break }
            done += got
        }
        return done
    }
}

internal import CMaaSProto
internal import CProtobufC
import Glibc
public import MaaSCore

extension ONNXModel {
    /// Serializes `graph` as an ONNX `ModelProto` with protobuf-c: initializers as `raw_data`
    /// (little-endian, as ONNX specifies), graph inputs and outputs with their symbolic dims,
    /// attributes, opset imports and `metadata_props`. Nodes keep their order, which must be
    /// topological (ONNX requires it; onnxruntime refuses anything else).
    ///
    /// - Parameter irVersion: 8 is what `torch.onnx.export` writes at opset 17.
    public static func encode(_ graph: ModelGraph, irVersion: Int64 = 8) throws(InferenceError) -> [UInt8] {
        let arena = CArena()
        defer { withExtendedLifetime(arena) {} }
        var model = Onnx__ModelProto()
        onnx__model_proto__init(&model)
        model.ir_version = irVersion
        let producer = graph.producer.split(separator: " ", maxSplits: 1).map(String.init)
        model.producer_name = arena.string(producer.first ?? "")
        model.producer_version = arena.string(producer.count > 1 ? producer[1] : "")

        let opsets = graph.opsets.sorted { $0.key < $1.key }.map { domain, version in
            let entry = arena.allocate(Onnx__OperatorSetIdProto.self, count: 1)
            onnx__operator_set_id_proto__init(entry)
            entry.pointee.domain = arena.string(domain)
            entry.pointee.version = Int64(version)
            return Optional(entry)
        }
        model.n_opset_import = opsets.count
        model.opset_import = arena.array(opsets)
        let metadata = graph.metadata.sorted { $0.key < $1.key }.map { key, value in
            Optional(stringEntry(key, value, arena))
        }
        model.n_metadata_props = metadata.count
        model.metadata_props = arena.array(metadata)

        let g = arena.allocate(Onnx__GraphProto.self, count: 1)
        onnx__graph_proto__init(g)
        g.pointee.name = arena.string(graph.name)
        let nodes = try graph.nodes.map { node throws(InferenceError) in Optional(try encode(node, arena)) }
        g.pointee.n_node = nodes.count
        g.pointee.node = arena.array(nodes)
        // Sorted so that the same graph always gives the same bytes.
        let initializers = try graph.initializers.sorted { $0.key < $1.key }.map { name, tensor throws(InferenceError) in
            Optional(try encode(tensor, name: name, arena))
        }
        g.pointee.n_initializer = initializers.count
        g.pointee.initializer = arena.array(initializers)
        let inputs = graph.inputs.map { Optional(encode($0, arena)) }
        g.pointee.n_input = inputs.count
        g.pointee.input = arena.array(inputs)
        let outputs = graph.outputs.map { Optional(encode($0, arena)) }
        g.pointee.n_output = outputs.count
        g.pointee.output = arena.array(outputs)
        model.graph = g

        let bytes = withUnsafePointer(to: &model.base) { packMessage($0) }
        withExtendedLifetime(graph) {}
        return bytes
    }

    private static func stringEntry(_ key: String, _ value: String, _ arena: CArena) -> UnsafeMutablePointer<Onnx__StringStringEntryProto> {
        let entry = arena.allocate(Onnx__StringStringEntryProto.self, count: 1)
        onnx__string_string_entry_proto__init(entry)
        entry.pointee.key = arena.string(key)
        entry.pointee.value = arena.string(value)
        return entry
    }

    private static func encode(_ node: Node, _ arena: CArena) throws(InferenceError) -> UnsafeMutablePointer<Onnx__NodeProto> {
        let n = arena.allocate(Onnx__NodeProto.self, count: 1)
        onnx__node_proto__init(n)
        n.pointee.name = arena.string(node.name)
        n.pointee.op_type = arena.string(node.opType)
        n.pointee.domain = arena.string(node.domain)
        let inputs = node.inputs.map { Optional(arena.string($0)) }
        n.pointee.n_input = inputs.count
        n.pointee.input = arena.array(inputs)
        let outputs = node.outputs.map { Optional(arena.string($0)) }
        n.pointee.n_output = outputs.count
        n.pointee.output = arena.array(outputs)
        let attributes = try node.attributes.sorted { $0.key < $1.key }.map { name, value throws(InferenceError) in
            let a = arena.allocate(Onnx__AttributeProto.self, count: 1)
            onnx__attribute_proto__init(a)
            a.pointee.name = arena.string(name)
            switch value {
            case .float(let f):
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT
                a.pointee.f = f
            case .int(let i):
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT
                a.pointee.i = Int64(i)
            case .string(let s):
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING
                a.pointee.s = binary(Array(s.utf8), arena)
            case .tensor(let t):
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR
                a.pointee.t = try encode(t, name: "", arena)
            case .floats(let values):
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS
                a.pointee.n_floats = values.count
                a.pointee.floats = arena.array(values)
            case .ints(let values):
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS
                a.pointee.n_ints = values.count
                a.pointee.ints = arena.array(values.map { Int64($0) })
            case .strings(let values):
                a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS
                a.pointee.n_strings = values.count
                a.pointee.strings = arena.array(values.map { binary(Array($0.utf8), arena) })
            case .unsupported(let what):
                throw .unsupported("cannot write attribute '\(name)' of \(node.label): \(what)")
            }
            return Optional(a)
        }
        n.pointee.n_attribute = attributes.count
        n.pointee.attribute = arena.array(attributes)
        return n
    }

    private static func encode(_ tensor: Tensor, name: String, _ arena: CArena) throws(InferenceError) -> UnsafeMutablePointer<Onnx__TensorProto> {
        guard tensor.dataType != .string else { throw .unsupported("cannot write string tensor '\(name)'") }
        let t = arena.allocate(Onnx__TensorProto.self, count: 1)
        onnx__tensor_proto__init(t)
        t.pointee.name = arena.string(name)
        t.pointee.data_type = tensor.dataType.onnxCode
        let dims = tensor.shape.map { Int64($0) }
        t.pointee.n_dims = dims.count
        t.pointee.dims = arena.array(dims)
        // The tensor outlives the pack (encode keeps the graph alive), so its bytes are referenced.
        t.pointee.raw_data = ProtobufCBinaryData(
            len: tensor.byteCount, data: tensor.unsafeBaseAddress.assumingMemoryBound(to: UInt8.self))
        return t
    }

    private static func encode(_ info: ValueInfo, _ arena: CArena) -> UnsafeMutablePointer<Onnx__ValueInfoProto> {
        let v = arena.allocate(Onnx__ValueInfoProto.self, count: 1)
        onnx__value_info_proto__init(v)
        v.pointee.name = arena.string(info.name)
        let type = arena.allocate(Onnx__TypeProto.self, count: 1)
        onnx__type_proto__init(type)
        let tensorType = arena.allocate(Onnx__TypeProto__Tensor.self, count: 1)
        onnx__type_proto__tensor__init(tensorType)
        tensorType.pointee.elem_type = info.dataType.onnxCode
        let shape = arena.allocate(Onnx__TensorShapeProto.self, count: 1)
        onnx__tensor_shape_proto__init(shape)
        let dims = info.shape.map { dimension in
            let d = arena.allocate(Onnx__TensorShapeProto__Dimension.self, count: 1)
            onnx__tensor_shape_proto__dimension__init(d)
            switch dimension {
            case .fixed(let value):
                d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                d.pointee.dim_value = Int64(value)
            case .symbolic(let name) where !name.isEmpty:
                d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                d.pointee.dim_param = arena.string(name)
            case .symbolic:
                break
            }
            return Optional(d)
        }
        shape.pointee.n_dim = dims.count
        shape.pointee.dim = arena.array(dims)
        tensorType.pointee.shape = shape
        type.pointee.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
        type.pointee.tensor_type = tensorType
        v.pointee.type = type
        return v
    }

    private static func binary(_ bytes: [UInt8], _ arena: CArena) -> ProtobufCBinaryData {
        ProtobufCBinaryData(len: bytes.count, data: arena.array(bytes))
    }
}

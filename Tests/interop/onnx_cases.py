"""Small ONNX graphs, one per operator edge case, built with the `onnx` package."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def model(nodes, inputs, outputs, initializers=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(
        nodes, "case",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 8
    return m


def rand(*shape, seed=0):
    return np.asarray(np.random.default_rng(seed + sum(shape)).standard_normal(shape), dtype=np.float32)


def binary(op, a_shape, b_shape):
    return (model([helper.make_node(op, ["a", "b"], ["y"])], [("a", F, a_shape), ("b", F, b_shape)], [("y", F, None)]),
            {"a": rand(*a_shape), "b": np.asarray(rand(*b_shape, seed=1) + (3.0 if op == "Div" else 0.0), dtype=np.float32)})


def unary(op, shape=(2, 3, 5), opset=17, **attrs):
    return (model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", F, shape)], [("y", F, None)], opset=opset),
            {"x": rand(*shape) * 3})


def gemm(m, k, n, trans_a=0, trans_b=0, alpha=1.0, beta=1.0, c_shape=(), weights_constant=True):
    a_shape = (k, m) if trans_a else (m, k)
    b_shape = (n, k) if trans_b else (k, n)
    inputs = [("a", F, a_shape)]
    inits = []
    feeds = {"a": rand(*a_shape)}
    names = ["a", "b"]
    if weights_constant:
        inits.append(("b", rand(*b_shape, seed=2)))
    else:
        inputs.append(("b", F, b_shape))
        feeds["b"] = rand(*b_shape, seed=2)
    if c_shape is not None:
        inits.append(("c", rand(*c_shape, seed=3) if c_shape != () else np.float32(0.5)))
        names.append("c")
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    return model([node], inputs, [("y", F, None)], inits), feeds


def matmul(a_shape, b_shape, b_constant=True):
    inputs = [("a", F, a_shape)]
    feeds = {"a": rand(*a_shape)}
    inits = []
    if b_constant:
        inits.append(("b", rand(*b_shape, seed=4)))
    else:
        inputs.append(("b", F, b_shape))
        feeds["b"] = rand(*b_shape, seed=4)
    return model([helper.make_node("MatMul", ["a", "b"], ["y"])], inputs, [("y", F, None)], inits), feeds


def conv(x_shape, w_shape, bias=True, **attrs):
    names = ["x", "w"] + (["b"] if bias else [])
    inits = [("w", rand(*w_shape, seed=5))] + ([("b", rand(w_shape[0], seed=6))] if bias else [])
    return (model([helper.make_node("Conv", names, ["y"], **attrs)], [("x", F, x_shape)], [("y", F, None)], inits),
            {"x": rand(*x_shape)})


def pool(op, x_shape, opset=17, **attrs):
    return (model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", F, x_shape)], [("y", F, None)], opset=opset),
            {"x": rand(*x_shape)})


def flatten_subgraph(batch):
    """What torch.flatten exports at opset 11: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [("zero", np.array(0, dtype=np.int64)), ("minus1", np.array([-1], dtype=np.int64))]
    return model(nodes, [("x", F, ["batch", 2, 3])], [("y", F, None)], inits, opset=11), {"x": rand(batch, 2, 3)}


def cases():
    c = {}
    for op in ("Add", "Sub", "Mul", "Div"):
        for a, b in [((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((2, 3), ()), ((3, 4), (3, 4)), ((4, 1, 3), (1, 5, 1))]:
            c[f"{op}_{a}_{b}"] = binary(op, a, b)
    for op, kw in [("Relu", {}), ("LeakyRelu", {"alpha": 0.2}), ("Sigmoid", {}), ("Tanh", {}), ("Erf", {}), ("Identity", {})]:
        c[op] = unary(op, **kw)
    c["Gelu_none"] = unary("Gelu", opset=20)
    c["Gelu_tanh"] = unary("Gelu", opset=20, approximate="tanh")
    c["Softmax_op11_axis1_rank3"] = unary("Softmax", opset=11, axis=1)
    c["Softmax_op13_axis1_rank3"] = unary("Softmax", opset=13, axis=1)
    c["LogSoftmax_op11_default"] = unary("LogSoftmax", opset=11)
    c["LogSoftmax_op13_axis0"] = unary("LogSoftmax", opset=13, axis=0)
    for args in [dict(m=3, k=4, n=5), dict(m=3, k=4, n=5, trans_b=1), dict(m=3, k=4, n=5, trans_a=1, trans_b=1),
                 dict(m=3, k=4, n=5, alpha=0.5, beta=2.0, c_shape=(3, 5)), dict(m=3, k=4, n=5, c_shape=(3, 1)),
                 dict(m=3, k=4, n=5, c_shape=(1, 5)), dict(m=3, k=4, n=5, c_shape=None),
                 dict(m=3, k=4, n=5, trans_b=1, weights_constant=False), dict(m=64, k=96, n=80, trans_b=1, beta=0.5, c_shape=(80,))]:
        c["Gemm_" + "_".join(f"{k}{v}" for k, v in args.items())] = gemm(**args)
    for a, b, const in [((2, 3, 4), (4, 5), True), ((2, 3, 4), (2, 4, 5), False), ((1, 3, 4), (2, 4, 5), False),
                        ((4,), (4, 5), True), ((2, 3, 4), (4,), False), ((40, 70), (70, 50), True)]:
        c[f"MatMul_{a}_{b}"] = matmul(a, b, const)
    c["Conv_pads_strides"] = conv((2, 3, 9, 8), (4, 3, 3, 3), pads=[1, 2, 0, 1], strides=[2, 1])
    c["Conv_dilations"] = conv((1, 2, 10, 10), (3, 2, 3, 3), dilations=[2, 2])
    c["Conv_group2"] = conv((2, 4, 6, 6), (6, 2, 3, 3), group=2, pads=[1, 1, 1, 1])
    c["Conv_depthwise"] = conv((1, 3, 7, 7), (3, 1, 3, 3), group=3, bias=False)
    c["Conv_same_upper"] = conv((1, 2, 7, 6), (2, 2, 4, 3), auto_pad="SAME_UPPER", strides=[2, 2])
    c["Conv_same_lower"] = conv((1, 2, 7, 6), (2, 2, 4, 3), auto_pad="SAME_LOWER")
    c["Conv_valid_1x1"] = conv((3, 5, 4, 4), (6, 5, 1, 1), auto_pad="VALID")
    c["Conv_wide_pads"] = conv((2, 8, 9, 7), (5, 8, 3, 3), pads=[1, 1, 1, 1])
    c["Conv_wide_odd_nopad"] = conv((1, 12, 8, 11), (7, 12, 3, 3))
    c["Conv_wide_asym_pads"] = conv((1, 9, 6, 6), (4, 9, 3, 3), pads=[0, 2, 1, 0], bias=False)
    c["Conv_1d"] = conv((2, 3, 11), (4, 3, 3), pads=[1, 2], strides=[2])
    # Stride 1 takes the direct kernel: rows of 16-, 8- and fewer-pixel tiles, partial 6-filter blocks.
    c["Conv_direct_wide_rows"] = conv((1, 3, 5, 37), (13, 3, 3, 3), pads=[1, 1, 1, 1])
    c["Conv_direct_batch3_24wide"] = conv((3, 5, 6, 26), (8, 5, 3, 3))
    c["Conv_direct_1d"] = conv((2, 3, 40), (8, 3, 5), pads=[2, 1])
    c["Conv_direct_5x2_asym"] = conv((1, 4, 9, 21), (6, 4, 5, 2), pads=[2, 0, 1, 1], bias=False)
    c["MaxPool_pads_strides"] = pool("MaxPool", (2, 3, 9, 9), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c["MaxPool_ceil"] = pool("MaxPool", (1, 2, 8, 8), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    c["MaxPool_dilations"] = pool("MaxPool", (1, 2, 9, 9), kernel_shape=[2, 2], dilations=[2, 2])
    c["AveragePool_exclude_pad"] = pool("AveragePool", (2, 3, 7, 7), kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    c["AveragePool_include_pad"] = pool("AveragePool", (2, 3, 7, 7), kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    c["AveragePool_ceil"] = pool("AveragePool", (1, 1, 6, 6), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    c["AveragePool_1d"] = pool("AveragePool", (2, 3, 10), kernel_shape=[3], strides=[2])
    c["GlobalAveragePool"] = pool("GlobalAveragePool", (2, 3, 5, 4))
    c["BatchNormalization_4d"] = (
        model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], [("x", F, (2, 3, 4, 4))], [("y", F, None)],
              [("s", rand(3, seed=7)), ("b", rand(3, seed=8)), ("m", rand(3, seed=9)), ("v", np.abs(rand(3, seed=10)) + 0.1)]),
        {"x": rand(2, 3, 4, 4)})
    c["LayerNormalization_axis1"] = (
        model([helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=1)], [("x", F, (2, 3, 4))], [("y", F, None)],
              [("s", rand(3, 4, seed=11)), ("b", rand(3, 4, seed=12))]), {"x": rand(2, 3, 4)})
    c["ReduceMean_op13_keepdims"] = (model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, -1])], [("x", F, (2, 3, 4))], [("y", F, None)], opset=13), {"x": rand(2, 3, 4)})
    c["ReduceMean_op13_all_nokeep"] = (model([helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)], [("x", F, (2, 3, 4))], [("y", F, None)], opset=13), {"x": rand(2, 3, 4)})
    c["ReduceMean_op18_axes_input"] = (model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], [("x", F, (2, 3, 4))], [("y", F, None)],
                                             [("axes", np.array([0, 2], dtype=np.int64))], opset=18), {"x": rand(2, 3, 4)})
    c["ArgMax_axis1_nokeep"] = (model([helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)], [("x", F, (3, 4, 2))], [("y", I64, None)]), {"x": rand(3, 4, 2)})
    ties = np.array([[1, 3, 3, 0], [2, 2, 1, 2]], dtype=np.float32)
    c["ArgMax_select_last"] = (model([helper.make_node("ArgMax", ["x"], ["y"], axis=-1, select_last_index=1)], [("x", F, (2, 4))], [("y", I64, None)]), {"x": ties})
    c["ArgMax_ties_first"] = (model([helper.make_node("ArgMax", ["x"], ["y"], axis=-1)], [("x", F, (2, 4))], [("y", I64, None)]), {"x": ties})
    c["Transpose_perm"] = unary("Transpose", shape=(2, 3, 4), perm=[1, 2, 0])
    c["Transpose_default"] = unary("Transpose", shape=(2, 3, 4))
    c["Concat_axis_neg"] = (model([helper.make_node("Concat", ["a", "b"], ["y"], axis=-1)], [("a", F, (2, 3)), ("b", F, (2, 2))], [("y", F, None)]), {"a": rand(2, 3), "b": rand(2, 2)})
    c["Flatten_axis0"] = unary("Flatten", shape=(2, 3, 4), axis=0)
    c["Flatten_axis2"] = unary("Flatten", shape=(2, 3, 4), axis=2)
    c["Unsqueeze_op11"] = unary("Unsqueeze", shape=(2, 3), opset=11, axes=[0, -1])
    c["Squeeze_op11"] = unary("Squeeze", shape=(1, 3, 1, 2), opset=11, axes=[2])
    c["Squeeze_op13_all"] = unary("Squeeze", shape=(1, 3, 1, 2), opset=13)
    c["Unsqueeze_op13"] = (model([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])], [("x", F, (2, 3))], [("y", F, None)],
                                 [("axes", np.array([1], dtype=np.int64))], opset=13), {"x": rand(2, 3)})
    c["Gather_axis1_negative"] = (model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], [("x", F, (2, 5, 3))], [("y", F, None)],
                                        [("i", np.array([[0, -1], [2, 2]], dtype=np.int64))]), {"x": rand(2, 5, 3)})
    c["Reshape_zero_minus1"] = (model([helper.make_node("Reshape", ["x", "s"], ["y"])], [("x", F, (2, 3, 4))], [("y", F, None)],
                                      [("s", np.array([0, -1], dtype=np.int64))]), {"x": rand(2, 3, 4)})
    c["Reshape_allowzero_empty"] = (model([helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)], [("x", F, (0, 3))], [("y", F, None)],
                                          [("s", np.array([3, 0], dtype=np.int64))], opset=14), {"x": np.zeros((0, 3), np.float32)})
    c["Cast_float_to_int64"] = (model([helper.make_node("Cast", ["x"], ["y"], to=I64)], [("x", F, (2, 3))], [("y", I64, None)]),
                                {"x": np.array([[-2.7, -0.5, 0.4], [1.9, 3.0, 100.99]], np.float32)})
    c["Cast_int64_to_float"] = (model([helper.make_node("Cast", ["x"], ["y"], to=F)], [("x", I64, (3,))], [("y", F, None)]),
                                {"x": np.array([-3, 0, 1 << 40], np.int64)})
    c["Flatten_subgraph_batch1"] = flatten_subgraph(1)
    c["Flatten_subgraph_batch5"] = flatten_subgraph(5)
    c["Dropout_inference"] = unary("Dropout", opset=13)
    c["Constant_value_floats"] = (model([helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]), helper.make_node("Add", ["x", "c"], ["y"])],
                                        [("x", F, (2, 3))], [("y", F, None)], opset=13), {"x": rand(2, 3)})
    # Relu after a product is fused into it; also when the product is itself an output (no fusion).
    for name, (m, feeds) in {
        "Gemm_relu_rowbias": gemm(m=5, k=7, n=33, trans_b=1, c_shape=(33,)),
        "Gemm_relu_generalC": gemm(m=5, k=7, n=33, c_shape=(5, 33)),
        "MatMul_relu": matmul((2, 3, 40), (40, 20), True),
        "MatMul_relu_batched": matmul((2, 3, 4), (2, 4, 5), False),
        "Conv_relu": conv((2, 3, 9, 8), (4, 3, 3, 3), pads=[1, 1, 1, 1]),
    }.items():
        m.graph.node.append(helper.make_node("Relu", ["y"], ["z"]))
        del m.graph.output[:]
        m.graph.output.append(helper.make_tensor_value_info("z", F, None))
        c[name] = (m, feeds)
    # A 2x2 stride-2 MaxPool after a stride-1 Conv (and Relu) is pooled inside the direct kernel:
    # even and odd conv outputs, 8-column tiles with and without a masked tail.
    for name, (x_shape, w_shape, relu) in {
        "Conv_relu_maxpool": ((2, 5, 12, 20), (7, 5, 3, 3), True),
        "Conv_maxpool_odd": ((1, 3, 11, 15), (6, 3, 3, 3), False),
        "Conv_relu_maxpool_wide": ((1, 4, 8, 45), (13, 4, 2, 5), True),
        "Conv_relu_maxpool_padded": ((2, 3, 9, 10), (5, 3, 3, 3), True),
    }.items():
        m, feeds = conv(x_shape, w_shape, pads=[1, 1, 1, 1] if name.endswith("padded") else [0, 0, 0, 0])
        last = "y"
        if relu:
            m.graph.node.append(helper.make_node("Relu", ["y"], ["r"]))
            last = "r"
        m.graph.node.append(helper.make_node("MaxPool", [last], ["z"], kernel_shape=[2, 2], strides=[2, 2]))
        del m.graph.output[:]
        m.graph.output.append(helper.make_tensor_value_info("z", F, None))
        c[name] = (m, feeds)
    both, feeds = gemm(m=4, k=6, n=18, trans_b=1, c_shape=(18,))
    both.graph.node.append(helper.make_node("Relu", ["y"], ["z"]))
    both.graph.output.append(helper.make_tensor_value_info("z", F, None))
    c["Gemm_relu_product_also_output"] = (both, feeds)
    return c


B = TensorProto.BOOL
I32 = TensorProto.INT32


def ints(*values):
    return np.array(values, dtype=np.int64)


def single(op, inputs, feeds, out_type=F, initializers=(), opset=17, outputs=("y",), **attrs):
    """One node over named graph inputs (with their ONNX types and shapes) and initializers."""
    names = [n for n, _, _ in inputs] + [n for n, _ in initializers]
    order = attrs.pop("order", None) or names
    return (model([helper.make_node(op, order, list(outputs), **attrs)], list(inputs), [(o, out_type, None) for o in outputs],
                  initializers, opset=opset), feeds)


def transformer_op_cases():
    """The ops and dtypes PyTorch's transformer exports use, with their edge cases (negative and
    INT64_MAX slice bounds, Python-style Mod, batch_dims, NaN through comparisons...)."""
    c = {}
    a_int = np.array([[3, -7, 0, 5], [-2, 9, 4, -4]], np.int64)
    b_int = np.array([3, -2, 5, 3], np.int64)
    for op in ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"):
        c[f"{op}_int64_broadcast"] = single(op, [("a", I64, (2, 4)), ("b", I64, (4,))], {"a": a_int, "b": b_int}, B)
        c[f"{op}_float_nan"] = single(op, [("a", F, (2, 3)), ("b", F, (1, 3))], {
            "a": np.array([[1, np.nan, 2], [0, -1, 5]], np.float32), "b": np.array([[1, 1, np.nan]], np.float32)}, B)
    masks = {"a": np.array([[True, False, True], [False, False, True]]), "b": np.array([True, False, False])}
    c["Equal_bool"] = single("Equal", [("a", B, (2, 3)), ("b", B, (3,))], masks, B)
    for op in ("And", "Or", "Xor"):
        c[f"{op}_broadcast"] = single(op, [("a", B, (2, 3)), ("b", B, (3,))], masks, B)
    c["Not"] = single("Not", [("a", B, (2, 3))], {"a": masks["a"]}, B)
    special = np.array([[np.nan, np.inf, -np.inf], [0, -1.5, 3]], np.float32)
    c["IsNaN"] = single("IsNaN", [("x", F, (2, 3))], {"x": special}, B)
    c["IsInf_negative_only"] = single("IsInf", [("x", F, (2, 3))], {"x": special}, B, detect_positive=0)
    c["Where_broadcast_float"] = single("Where", [("c", B, (2, 1, 3)), ("x", F, (4, 3)), ("y", F, (1,))],
                                        {"c": np.array([[[True, False, True]], [[False, True, False]]]), "x": rand(4, 3), "y": rand(1)}, F,
                                        outputs=("out",))
    c["Where_int64"] = single("Where", [("c", B, (2, 4)), ("x", I64, (2, 4)), ("y", I64, (4,))],
                              {"c": a_int > 0, "x": a_int, "y": b_int}, I64, outputs=("out",))
    # Shape building: every value below is known once the input shape is (folded in the plan).
    shape_nodes = [helper.make_node("Shape", ["x"], ["s"]),
                   helper.make_node("ConstantOfShape", ["s"], ["ones"], value=numpy_helper.from_array(ints(1))),
                   helper.make_node("Gather", ["s", "one"], ["len"], axis=0),
                   helper.make_node("Range", ["zero", "len", "one"], ["positions"]),
                   helper.make_node("Unsqueeze", ["positions", "zero1"], ["row"]),
                   helper.make_node("Expand", ["row", "s"], ["grid"]),
                   helper.make_node("Mul", ["grid", "ones"], ["y"])]
    c["ConstantOfShape_Range_Expand"] = (
        model(shape_nodes, [("x", F, (3, 5))], [("y", I64, None)],
              [("one", np.array(1, np.int64)), ("zero", np.array(0, np.int64)), ("zero1", ints(0))], opset=13),
        {"x": rand(3, 5)})
    c["Range_float_negative_delta"] = single("Range", [], {}, F, initializers=[
        ("s", np.array(2.5, np.float32)), ("l", np.array(-1.0, np.float32)), ("d", np.array(-0.75, np.float32))])
    x = rand(3, 6, 5)
    for name, (starts, ends, axes, steps) in {
        "basic": ([0, 1], [2, 5], [0, 1], [1, 2]),
        "negative_step": ([-1, 4], [-100, 0], [0, 2], [-1, -2]),
        "int64_max_end": ([1], [np.iinfo(np.int64).max], [-2], [1]),
        "int64_min_end_reverse": ([5], [np.iinfo(np.int64).min], [1], [-1]),
        "empty": ([4], [2], [1], [1]),
        "int64_max_step": ([1, 0], [6, 5], [1, 2], [np.iinfo(np.int64).max, 2]),
        "int64_min_step": ([-1], [-100], [1], [np.iinfo(np.int64).min]),
    }.items():
        c[f"Slice_{name}"] = single("Slice", [("x", F, (3, 6, 5))], {"x": x}, initializers=[
            ("starts", ints(*starts)), ("ends", ints(*ends)), ("axes", ints(*axes)), ("steps", ints(*steps))])
    c["Slice_op9_attributes"] = single("Slice", [("x", F, (3, 6, 5))], {"x": x}, opset=9, starts=[1, -3], ends=[3, 1000], axes=[0, 2])
    c["Split_op13_sizes"] = single("Split", [("x", F, (3, 7))], {"x": rand(3, 7)}, initializers=[("split", ints(2, 4, 1))],
                                   outputs=("p", "q", "r"), opset=13, axis=1)
    c["Split_op18_num_outputs_uneven"] = single("Split", [("x", F, (7, 2))], {"x": rand(7, 2)}, outputs=("p", "q", "r"), opset=18, num_outputs=3)
    c["Split_op11_equal"] = single("Split", [("x", I64, (2, 6))], {"x": np.arange(12, dtype=np.int64).reshape(2, 6)}, I64,
                                   outputs=("p", "q"), opset=11, axis=-1)
    c["Expand_lower_rank_shape"] = single("Expand", [("x", F, (3, 1))], {"x": rand(3, 1)}, initializers=[("shape", ints(2, 1, 4))])
    c["Expand_bool"] = single("Expand", [("x", B, (1, 3))], {"x": masks["b"][None]}, B, initializers=[("shape", ints(2, 3))])
    data = rand(2, 3, 4)
    c["GatherND_batch0"] = single("GatherND", [("x", F, (2, 3, 4))], {"x": data}, initializers=[("i", np.array([[1, -1], [0, 2]], np.int64))])
    c["GatherND_batch1"] = single("GatherND", [("x", F, (2, 3, 4))], {"x": data}, initializers=[("i", np.array([[[2, 3]], [[0, 1]]], np.int64))],
                                  batch_dims=1)
    c["GatherElements_axis1_negative"] = single("GatherElements", [("x", F, (2, 3, 4))], {"x": data},
                                                initializers=[("i", np.array([[[0, -1, 2, 1]], [[2, 2, -3, 0]]], np.int64))], axis=1)
    for exclusive, reverse in [(0, 0), (1, 0), (0, 1), (1, 1)]:
        c[f"CumSum_int64_excl{exclusive}_rev{reverse}"] = single("CumSum", [("x", I64, (2, 4))], {"x": a_int}, I64,
                                                                initializers=[("axis", np.array(1, np.int64))], exclusive=exclusive, reverse=reverse)
    c["CumSum_float_axis0"] = single("CumSum", [("x", F, (3, 4))], {"x": rand(3, 4)}, initializers=[("axis", np.array(-2, np.int32))])
    r = rand(2, 3, 4)
    c["ReduceSum_op13_axes_input"] = single("ReduceSum", [("x", F, (2, 3, 4))], {"x": r}, initializers=[("axes", ints(0, -1))], opset=13, keepdims=0)
    c["ReduceSum_op13_noop_empty"] = single("ReduceSum", [("x", F, (2, 3, 4))], {"x": r}, opset=13, noop_with_empty_axes=1)
    c["ReduceSum_int64_all"] = single("ReduceSum", [("x", I64, (2, 4))], {"x": a_int}, I64, opset=13)
    c["ReduceL2_last_axis"] = single("ReduceL2", [("x", F, (2, 3, 4))], {"x": r}, axes=[-1])
    c["ReduceMax_op18_axes_input"] = single("ReduceMax", [("x", F, (2, 3, 4))], {"x": r}, initializers=[("axes", ints(1))], opset=18)
    c["ReduceMin_middle_axis_nokeep"] = single("ReduceMin", [("x", F, (2, 3, 4))], {"x": r}, axes=[1], keepdims=0)
    c["ReduceProd"] = single("ReduceProd", [("x", F, (2, 3, 4))], {"x": r}, axes=[0, 2])
    c["ReduceSumSquare"] = single("ReduceSumSquare", [("x", F, (2, 3, 4))], {"x": r}, axes=[2])
    c["ReduceLogSumExp"] = single("ReduceLogSumExp", [("x", F, (2, 3, 4))], {"x": r * 10}, axes=[1])
    c["ReduceL1"] = single("ReduceL1", [("x", F, (2, 3, 4))], {"x": r}, keepdims=0)
    big = rand(3, 70, 5, 40)
    c["ReduceSum_interleaved_axes"] = single("ReduceSum", [("x", F, big.shape)], {"x": big}, initializers=[("axes", ints(1, 3))], opset=13)
    c["ReduceMax_interleaved_int64"] = single("ReduceMax", [("x", I64, (3, 4, 5))], {"x": np.arange(60, dtype=np.int64).reshape(3, 4, 5) % 17},
                                              I64, axes=[0, 2], keepdims=0)
    c["Pow_tensor_broadcast"] = single("Pow", [("a", F, (2, 3)), ("b", F, (3,))], {"a": np.abs(rand(2, 3)) + 0.5, "b": np.array([2, 0.5, -1.3], np.float32)})
    c["Pow_int64_exponent"] = single("Pow", [("a", F, (2, 3))], {"a": rand(2, 3)}, initializers=[("b", np.array(3, np.int64))])
    c["Mod_int64_python_sign"] = single("Mod", [("a", I64, (2, 4)), ("b", I64, (4,))], {"a": a_int, "b": b_int}, I64)
    c["Mod_int64_fmod"] = single("Mod", [("a", I64, (2, 4)), ("b", I64, (4,))], {"a": a_int, "b": b_int}, I64, fmod=1)
    c["Mod_float_fmod"] = single("Mod", [("a", F, (2, 3)), ("b", F, (3,))], {"a": rand(2, 3) * 5, "b": np.array([1.5, -2, 0.7], np.float32)}, fmod=1)
    c["Max_three_broadcast"] = single("Max", [("a", F, (2, 3)), ("b", F, (3,)), ("c", F, (2, 1))], {"a": rand(2, 3), "b": rand(3), "c": rand(2, 1)})
    c["Min_int64"] = single("Min", [("a", I64, (2, 4)), ("b", I64, (4,))], {"a": a_int, "b": b_int}, I64)
    c["Sum_three"] = single("Sum", [("a", F, (2, 3)), ("b", F, (3,)), ("c", F, (2, 3))], {"a": rand(2, 3), "b": rand(3), "c": rand(2, 3, seed=3)})
    c["Mean_two"] = single("Mean", [("a", F, (2, 3)), ("b", F, (1, 3))], {"a": rand(2, 3), "b": rand(1, 3)})
    c["Clip_op13_min_only"] = single("Clip", [("x", F, (2, 3))], {"x": rand(2, 3)}, initializers=[("lo", np.array(-0.2, np.float32))])
    c["Clip_op13_max_only"] = single("Clip", [("x", F, (2, 3)), ("hi", F, ())], {"x": rand(2, 3), "hi": np.array(0.1, np.float32)},
                                     order=["x", "", "hi"])
    c["Clip_op6_attributes"] = single("Clip", [("x", F, (2, 3))], {"x": rand(2, 3)}, opset=6, min=-0.5, max=0.25)
    c["Clip_int64"] = single("Clip", [("x", I64, (2, 4))], {"x": a_int}, I64, initializers=[("lo", np.array(-3, np.int64)), ("hi", np.array(4, np.int64))])
    positive = np.abs(rand(2, 3, 5)) + 0.1
    halves = np.array([[-2.5, -1.5, -0.5, 0.5, 1.5], [2.5, 0.49, -0.51, 3.7, -3.2]], np.float32)
    for op, feed in [("Log", positive), ("Reciprocal", positive), ("Floor", halves), ("Ceil", halves), ("Round", halves),
                     ("Sin", rand(2, 3, 5) * 3), ("Cos", rand(2, 3, 5) * 3), ("Softplus", rand(2, 3, 5) * 10), ("Sqrt", positive)]:
        c[f"{op}_op13"] = single(op, [("x", F, feed.shape)], {"x": feed}, opset=13)
    c["Neg_int64"] = single("Neg", [("x", I64, (2, 4))], {"x": a_int}, I64)
    c["Abs_int32"] = single("Abs", [("x", I32, (2, 4))], {"x": a_int.astype(np.int32)}, I32)
    c["Sub_int32_broadcast"] = single("Sub", [("a", I32, (2, 4)), ("b", I32, (4,))], {"a": a_int.astype(np.int32), "b": b_int.astype(np.int32)}, I32)
    c["Div_int64_truncates"] = single("Div", [("a", I64, (2, 4)), ("b", I64, (4,))], {"a": a_int, "b": b_int}, I64)
    c["Cast_bool_to_float"] = single("Cast", [("x", B, (2, 3))], {"x": masks["a"]}, to=F)
    c["Cast_float_to_bool"] = single("Cast", [("x", F, (2, 3))], {"x": np.array([[0, -0.0, 0.1], [np.nan, -3, 0]], np.float32)}, B, to=B)
    c["MatMul_4d_broadcast"] = single("MatMul", [("a", F, (2, 3, 5, 4)), ("b", F, (1, 3, 4, 6))], {"a": rand(2, 3, 5, 4), "b": rand(1, 3, 4, 6)})
    return c


def fused_cases():
    """Patterns the compiler fuses (attention, MatMul + bias + GELU, Add + LayerNorm), in the
    forms the exporters write them and with the sizes that reach every tail of the kernels, plus
    look-alikes that must not be fused."""
    c = {}
    def attention(name, b, h, s, t, d, dv, mask_shape=None, form="sdpa", nan_guard=False, mask_fill=None):
        inputs = [("q", F, (b, h, s, d)), ("kt", F, (b, h, d, t)), ("v", F, (b, h, t, dv))]
        feeds = {"q": rand(b, h, s, d), "kt": rand(b, h, d, t, seed=1), "v": rand(b, h, t, dv, seed=2)}
        inits = [("c1", np.array(d ** -0.25, np.float32)), ("c2", np.array(d ** -0.25, np.float32)), ("sqrt_d", np.array(d ** 0.5, np.float32)),
                 ("zero", np.array(0.0, np.float32))]
        if form == "sdpa":
            nodes = [helper.make_node("Mul", ["q", "c1"], ["qs"]), helper.make_node("Mul", ["kt", "c2"], ["ks"]),
                     helper.make_node("MatMul", ["qs", "ks"], ["scores"])]
        else:
            nodes = [helper.make_node("MatMul", ["q", "kt"], ["raw"]), helper.make_node("Div", ["raw", "sqrt_d"], ["scores"])]
        last = "scores"
        if mask_shape is not None:
            inputs.append(("mask", F, mask_shape))
            mask = np.where(np.random.default_rng(3).random(mask_shape) < 0.3, np.float32(mask_fill if mask_fill is not None else -1e4), np.float32(0))
            feeds["mask"] = mask.astype(np.float32)
            nodes.append(helper.make_node("Add", ["scores", "mask"], ["masked"]))
            last = "masked"
        nodes.append(helper.make_node("Softmax", [last], ["p"], axis=-1))
        weights = "p"
        if nan_guard:
            nodes += [helper.make_node("IsNaN", ["p"], ["isnan"]), helper.make_node("Where", ["isnan", "zero", "p"], ["pw"])]
            weights = "pw"
        nodes.append(helper.make_node("MatMul", [weights, "v"], ["y"]))
        c[f"Attention_{name}"] = (model(nodes, inputs, [("y", F, None)], inits), feeds)
    attention("sdpa_padding_mask", 2, 3, 9, 9, 16, 16, (2, 1, 1, 9))
    attention("sdpa_odd_sizes", 1, 2, 7, 13, 5, 11, (1, 1, 7, 13))
    attention("eager_div_no_mask", 2, 2, 5, 37, 8, 40, None, form="eager")
    attention("sdpa_wide_keys", 1, 1, 3, 70, 32, 32, (1, 1, 3, 70))
    attention("nan_guard_fully_masked_rows", 1, 2, 6, 8, 4, 8, (1, 2, 6, 8), nan_guard=True, mask_fill=-np.inf)
    attention("head_broadcast_mask", 2, 4, 4, 6, 8, 8, (1, 4, 4, 6))
    # Keys and values shared across the batch (broadcast batch dims).
    m, feeds = None, None
    q, kt, v = rand(2, 3, 5, 8), rand(1, 3, 8, 7, seed=1), rand(1, 3, 7, 8, seed=2)
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    c["Attention_shared_keys_values"] = (model(nodes, [("q", F, q.shape), ("kt", F, kt.shape), ("v", F, v.shape)], [("y", F, None)]),
                                         {"q": q, "kt": kt, "v": v})
    # MatMul + bias + GELU in three spellings, and one look-alike (x / 1.5) that is not GELU.
    x_shape, k, n = (2, 5, 12), 12, 40
    w, bias = rand(k, n, seed=4), rand(n, seed=5)
    def mlp(name, tail, opset=17, extra=()):
        nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["bias", "mm"], ["h"])] + tail
        c[f"MatMul_bias_{name}"] = (model(nodes, [("x", F, x_shape)], [("y", F, None)],
                                          [("w", w), ("bias", bias)] + list(extra), opset=opset), {"x": rand(*x_shape) * 2})
    consts = [("sqrt2", np.array(2 ** 0.5, np.float32)), ("one", np.array(1.0, np.float32)), ("half", np.array(0.5, np.float32)),
              ("three", np.array(3.0, np.float32)), ("k1", np.array(0.044715, np.float32)), ("k0", np.array((2 / np.pi) ** 0.5, np.float32)),
              ("other", np.array(1.5, np.float32))]
    mlp("gelu_torchscript", [helper.make_node("Div", ["h", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                             helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["m"]),
                             helper.make_node("Mul", ["m", "half"], ["y"])], extra=consts)
    mlp("gelu_tanh_gpt2", [helper.make_node("Mul", ["h", "half"], ["hh"]), helper.make_node("Pow", ["h", "three"], ["cube"]),
                           helper.make_node("Mul", ["cube", "k1"], ["kc"]), helper.make_node("Add", ["h", "kc"], ["inner"]),
                           helper.make_node("Mul", ["inner", "k0"], ["scaled"]), helper.make_node("Tanh", ["scaled"], ["t"]),
                           helper.make_node("Add", ["t", "one"], ["t1"]), helper.make_node("Mul", ["hh", "t1"], ["y"])], extra=consts)
    mlp("gelu_op20", [helper.make_node("Gelu", ["h"], ["y"])], opset=20)
    mlp("not_gelu", [helper.make_node("Div", ["h", "other"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                     helper.make_node("Add", ["e", "one"], ["e1"]), helper.make_node("Mul", ["h", "e1"], ["m"]),
                     helper.make_node("Mul", ["m", "half"], ["y"])], extra=consts)
    # The GELU's input is also a graph output: nothing may be fused away.
    m, feeds = c["MatMul_bias_gelu_op20"]
    m2 = onnx_copy(m)
    m2.graph.output.append(helper.make_tensor_value_info("h", F, None))
    c["MatMul_bias_gelu_input_is_output"] = (m2, feeds)
    # Residual Add + LayerNorm, same shapes and with a broadcasting residual.
    for name, b_shape in [("same_shape", (2, 5, 12)), ("broadcast", (5, 12))]:
        nodes = [helper.make_node("Add", ["a", "b"], ["sum"]),
                 helper.make_node("LayerNormalization", ["sum", "scale", "shift"], ["y"], axis=-1, epsilon=1e-5)]
        c[f"Add_LayerNorm_{name}"] = (model(nodes, [("a", F, (2, 5, 12)), ("b", F, b_shape)], [("y", F, None)],
                                            [("scale", rand(12, seed=6)), ("shift", rand(12, seed=7))]),
                                      {"a": rand(2, 5, 12), "b": rand(*b_shape, seed=8)})
    return c


def onnx_copy(m):
    import onnx
    copy = onnx.ModelProto()
    copy.CopyFrom(m)
    return copy

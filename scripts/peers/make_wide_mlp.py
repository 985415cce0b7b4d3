"""Writes the benchmark's wide MLP 512->2048->2048->512 (Gemm transB=1 + Relu, dynamic batch),
laid out as torch.onnx.export writes Linear layers."""
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

sizes = [512, 2048, 2048, 512]
rng = np.random.default_rng(0)
nodes, inits = [], []
current = "input"
for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
    bound = 1 / np.sqrt(fan_in)
    inits.append(numpy_helper.from_array(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32), f"w{i}"))
    inits.append(numpy_helper.from_array(rng.uniform(-bound, bound, fan_out).astype(np.float32), f"b{i}"))
    out = f"gemm{i}" if i < len(sizes) - 2 else "output"
    nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out], transB=1))
    if i < len(sizes) - 2:
        nodes.append(helper.make_node("Relu", [out], [f"relu{i}"]))
        current = f"relu{i}"
graph = helper.make_graph(nodes, "wide_mlp",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 512])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 512])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
save(model, sys.argv[1])

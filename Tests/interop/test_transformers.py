"""The committed transformer exports (both PyTorch exporters) through `maas run` and through
tritonclient's gRPC client, against onnxruntime's outputs, with the tolerances of tolerance.py.
INT64 token ids and masks, BOOL padding masks, float images."""
import json
import shutil

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient

from conftest import ROOT, RunningProcess, binary, wait_for
from test_engine_ops import run_maas
from tolerance import Comparison

FIXTURES = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "transformers"
MODELS = sorted(p.name[:-len(".onnx")] for p in FIXTURES.glob("*.onnx"))
DATATYPES = {np.dtype(np.int64): "INT64", np.dtype(np.bool_): "BOOL", np.dtype(np.float32): "FP32"}


def case(model, batch):
    def arrays(kind):
        prefix = f"{model}.{batch}.{kind}."
        return {p.name[len(prefix):-len(".npy")]: np.load(p) for p in FIXTURES.glob(prefix + "*.npy")}
    return arrays("in"), arrays("out")


def cases():
    for model in MODELS:
        for batch in json.loads((FIXTURES / f"{model}.json").read_text())["cases"]:
            yield model, batch


@pytest.mark.parametrize("model,batch", list(cases()))
def test_maas_run_matches_onnxruntime(model, batch, tmp_path):
    feeds, expected = case(model, batch)
    result = run_maas(FIXTURES / f"{model}.onnx", feeds, tmp_path / "out", None)
    assert result.returncode == 0, result.stderr
    comparison = Comparison(onnx.load(str(FIXTURES / f"{model}.onnx")), feeds)
    for name, reference in expected.items():
        comparison.check(name, np.load(tmp_path / "out" / f"{name}.npy"), reference)


@pytest.mark.parametrize("model", ["bert.torchscript.op17", "gpt2.dynamo.op20"])
def test_maas_run_verbose_names_the_fusions(model, tmp_path):
    feeds, _ = case(model, "b1")
    result = run_maas(FIXTURES / f"{model}.onnx", feeds, tmp_path / "out", None, "--verbose")
    assert result.returncode == 0, result.stderr
    assert "fused: attention ×2, product+GELU ×2" in result.stdout, result.stdout


SERVED = ["bert.dynamo.op20", "bert_classifier.torchscript.op17", "distilbert.torchscript.op17", "gpt2.torchscript.op17",
          "roberta.dynamo.op20", "vit.dynamo.op20", "torch_encoder.dynamo.op20", "torch_encoder.torchscript.op17"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for model in SERVED:
        folder = repo / model.replace(".", "_") / "1"
        folder.mkdir(parents=True)
        shutil.copy(FIXTURES / f"{model}.onnx", folder / "model.onnx")
        data = FIXTURES / f"{model}.onnx.data"
        if data.exists():
            shutil.copy(data, folder / data.name)
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    client = grpcclient.InferenceServerClient(process.address)
    assert wait_for(lambda: client.is_server_ready() and all(client.is_model_ready(m.replace(".", "_")) for m in SERVED), timeout=60)
    yield process
    assert process.stop() == 0


@pytest.mark.parametrize("model", SERVED)
def test_tritonclient_matches_onnxruntime(server, model):
    client = grpcclient.InferenceServerClient(server.address)
    name = model.replace(".", "_")
    metadata = client.get_model_metadata(name)
    feeds, expected = case(model, "b3")
    assert {i.name: i.datatype for i in metadata.inputs} == {k: DATATYPES[v.dtype] for k, v in feeds.items()}
    inputs = []
    for key, value in feeds.items():
        tensor = grpcclient.InferInput(key, list(value.shape), DATATYPES[value.dtype])
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(name, inputs, outputs=[grpcclient.InferRequestedOutput(k) for k in expected])
    comparison = Comparison(onnx.load(str(FIXTURES / f"{model}.onnx")), feeds)
    for key, reference in expected.items():
        comparison.check(key, result.as_numpy(key), reference)

"""tritonclient[grpc] 2.73 (Triton's own client) against maas serve."""
import json
import shutil
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT, RunningProcess, binary, wait_for
from tolerance import check_against_onnxruntime

FIXTURES = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx"
SEED = FIXTURES / "seed_mlp.torchscript.op17.onnx"


def serve(args):
    return RunningProcess([binary("maas-interop"), "serve-models", "--port", "0"] + args)


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "seed_mlp" / "1").mkdir(parents=True)
    shutil.copy(FIXTURES / "seed_mlp.torchscript.op17.onnx", repo / "seed_mlp" / "1" / "model.onnx")
    (repo / "classifier" / "3").mkdir(parents=True)
    shutil.copy(FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.onnx", repo / "classifier" / "3" / "model.onnx")
    (repo / "classifier" / "config.json").write_text(json.dumps({
        "max_batch_size": 16,
        "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": 500},
    }))
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not a model")
    (repo / "badconfig" / "1").mkdir(parents=True)
    shutil.copy(FIXTURES / "seed_mlp.torchscript.op17.onnx", repo / "badconfig" / "1" / "model.onnx")
    (repo / "badconfig" / "config.json").write_text(json.dumps({"max_batch_size": 4, "instance_grup": []}))
    return repo


@pytest.fixture(scope="module")
def server(repository):
    process = serve(["--model-repository", str(repository)])
    client = grpcclient.InferenceServerClient(process.address)
    assert wait_for(lambda: client.is_server_ready(), timeout=30)
    yield process
    assert process.stop() == 0


@pytest.fixture()
def client(server):
    return grpcclient.InferenceServerClient(server.address)


def infer_input(x, name="input", datatype="FP32"):
    inp = grpcclient.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    return inp


def test_live_ready_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("seed_mlp") and client.is_model_ready("classifier", "3")
    assert not client.is_model_ready("classifier", "1")
    assert not client.is_model_ready("broken")
    meta = client.get_server_metadata()
    assert meta.name == "maas" and meta.version
    model = client.get_model_metadata("seed_mlp")
    assert model.versions == ["1"] and model.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, 10])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("output", "FP32", [-1, 10])]


def test_model_config(client):
    config = client.get_model_config("classifier").config
    assert config.name == "classifier" and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [i.name for i in config.input] == ["input"] and list(config.input[0].dims) == [4]
    assert {o.name for o in config.output} == {"label", "probabilities"}


@pytest.mark.parametrize("batch", [1, 8])
def test_infer_matches_onnxruntime(client, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 10)).astype(np.float32)
    result = client.infer("seed_mlp", [infer_input(x)])
    check_against_onnxruntime(SEED, {"input": x}, {"output": result.as_numpy("output")})
    assert result.get_response().model_version == "1"


def test_classifier_outputs_and_requested_output(client):
    x = np.load(FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.b3.in.input.npy")
    labels = np.load(FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.b3.out.label.npy")
    result = client.infer("classifier", [infer_input(x)])
    np.testing.assert_array_equal(result.as_numpy("label"), labels)
    only = client.infer("classifier", [infer_input(x)], outputs=[grpcclient.InferRequestedOutput("probabilities")])
    assert only.as_numpy("label") is None and only.as_numpy("probabilities").shape == (3, 3)


def test_200_concurrent_async_infer(client):
    model_file = FIXTURES / "seed_mlp.torchscript.op17.onnx"
    inputs = [np.random.default_rng(i).standard_normal((1, 10)).astype(np.float32) for i in range(200)]
    results, done = {}, threading.Event()
    lock = threading.Lock()

    def callback(index):
        def handle(result, error):
            with lock:
                results[index] = (result, error)
                if len(results) == len(inputs):
                    done.set()
        return handle

    for index, x in enumerate(inputs):
        client.async_infer("seed_mlp", [infer_input(x)], callback(index))
    assert done.wait(60)
    for index, x in enumerate(inputs):
        result, error = results[index]
        assert error is None, error
        check_against_onnxruntime(model_file, {"input": x}, {"output": result.as_numpy("output")})


@pytest.mark.parametrize("call,status,fragment", [
    (lambda c: c.infer("nope", [infer_input(np.zeros((1, 10), np.float32))]), "NOT_FOUND", "unknown model 'nope'"),
    (lambda c: c.infer("seed_mlp", [infer_input(np.zeros((1, 10), np.float32))], model_version="7"), "NOT_FOUND", "no ready version '7'"),
    (lambda c: c.infer("broken", [infer_input(np.zeros((1, 10), np.float32))]), "UNAVAILABLE", "not a valid ONNX model"),
    (lambda c: c.infer("badconfig", [infer_input(np.zeros((1, 10), np.float32))]), "UNAVAILABLE", "unknown field 'instance_grup'"),
    (lambda c: c.infer("seed_mlp", [infer_input(np.zeros((1, 10), np.float64), datatype="FP64")]), "INVALID_ARGUMENT", "expects datatype FP32, got FP64"),
    (lambda c: c.infer("seed_mlp", [infer_input(np.zeros((1, 7), np.float32))]), "INVALID_ARGUMENT", "expects shape [-1, 10], got [1, 7]"),
    (lambda c: c.infer("seed_mlp", [infer_input(np.zeros((65, 10), np.float32))]), "INVALID_ARGUMENT", "batch size 65, allowed 1...64"),
    (lambda c: c.infer("seed_mlp", [infer_input(np.zeros((1, 10), np.float32), name="x")]), "INVALID_ARGUMENT", "has no input 'x'"),
    (lambda c: c.infer("seed_mlp", [infer_input(np.zeros((1, 10), np.float32))], outputs=[grpcclient.InferRequestedOutput("y")]), "INVALID_ARGUMENT", "has no output 'y'"),
])
def test_errors_raise_with_status_and_message(client, call, status, fragment):
    with pytest.raises(InferenceServerException) as info:
        call(client)
    assert info.value.status() == f"StatusCode.{status}", info.value
    assert fragment in info.value.message(), info.value.message()
    # The server keeps serving.
    assert client.is_model_ready("seed_mlp")


def test_builtin_seed_model_without_a_repository():
    process = serve([])
    try:
        client = grpcclient.InferenceServerClient(process.address)
        assert wait_for(lambda: client.is_server_ready(), timeout=30)
        assert client.is_model_ready("seed")
        result = client.infer("seed", [infer_input(np.ones((2, 10), np.float32))])
        assert result.as_numpy("output").shape == (2, 10)
    finally:
        assert process.stop() == 0


def test_stream_infer(client):
    x = np.random.default_rng(5).standard_normal((2, 10)).astype(np.float32)
    results, errors = [], []
    done = threading.Event()

    def callback(result, error):
        (errors if error else results).append(error or result)
        if len(results) + len(errors) == 4:
            done.set()

    client.start_stream(callback=callback)
    for index in range(3):
        client.async_stream_infer("seed_mlp", [infer_input(x)], request_id=str(index))
    client.async_stream_infer("seed_mlp", [infer_input(np.zeros((2, 3), np.float32))], request_id="bad")
    assert done.wait(30)
    client.stop_stream()
    assert sorted(r.get_response().id for r in results) == ["0", "1", "2"]
    for result in results:
        check_against_onnxruntime(SEED, {"input": x}, {"output": result.as_numpy("output")})
    assert len(errors) == 1 and "expects shape" in str(errors[0])


def test_statistics_add_up(client):
    before = client.get_inference_statistics("classifier").model_stats[0]
    x = np.load(FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.b3.in.input.npy")
    for _ in range(5):
        client.infer("classifier", [infer_input(x)])
    stats = client.get_inference_statistics("classifier", "3").model_stats[0]
    assert stats.name == "classifier" and stats.version == "3"
    assert stats.inference_count - before.inference_count == 15  # rows
    assert 1 <= stats.execution_count - before.execution_count <= 5  # batches
    infer = stats.inference_stats
    assert infer.success.count - before.inference_stats.success.count == 5
    assert infer.success.ns >= infer.compute_infer.ns > 0
    assert sum(b.compute_infer.count for b in stats.batch_stats) == stats.execution_count
    assert all(b.batch_size >= 3 for b in stats.batch_stats)
    assert stats.last_inference > 0
    every = client.get_inference_statistics()
    assert {s.name for s in every.model_stats} >= {"seed_mlp", "classifier"}


def test_repository_index_and_reasons(client):
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["seed_mlp"].state == "READY" and index["seed_mlp"].version == "1"
    assert index["broken"].state == "UNAVAILABLE" and "not a valid ONNX model" in index["broken"].reason
    assert "instance_grup" in index["badconfig"].reason


def test_load_unload_refused_outside_explicit_mode(client):
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("seed_mlp")
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert client.is_model_ready("seed_mlp")


def test_explicit_mode_load_and_unload(repository):
    process = serve(["--model-repository", str(repository), "--model-control-mode", "explicit", "--load-model", "seed_mlp"])
    try:
        client = grpcclient.InferenceServerClient(process.address)
        assert wait_for(lambda: client.is_server_ready(), timeout=30)
        assert client.is_model_ready("seed_mlp") and not client.is_model_ready("classifier")
        client.load_model("classifier")
        assert client.is_model_ready("classifier")
        client.unload_model("seed_mlp")
        assert not client.is_model_ready("seed_mlp")
        with pytest.raises(InferenceServerException) as info:
            client.infer("seed_mlp", [infer_input(np.zeros((1, 10), np.float32))])
        assert info.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException) as info:
            client.load_model("no_such_model")
        assert info.value.status() == "StatusCode.NOT_FOUND"
    finally:
        assert process.stop() == 0


def test_poll_mode_picks_up_new_versions_and_models(tmp_path):
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    shutil.copy(FIXTURES / "seed_mlp.torchscript.op17.onnx", repo / "m" / "1" / "model.onnx")
    process = serve(["--model-repository", str(repo), "--model-control-mode", "poll", "--repository-poll-secs", "1"])
    try:
        client = grpcclient.InferenceServerClient(process.address)
        assert wait_for(lambda: client.is_server_ready(), timeout=30)
        assert client.get_model_metadata("m").versions == ["1"]
        (repo / "m" / "2").mkdir()
        shutil.copy(FIXTURES / "seed_mlp.dynamo.op18.onnx", repo / "m" / "2" / "model.onnx")
        assert wait_for(lambda: client.get_model_metadata("m").versions == ["2"], timeout=15)
        assert client.infer("m", [infer_input(np.ones((1, 10), np.float32))]).get_response().model_version == "2"
        (repo / "n" / "1").mkdir(parents=True)
        shutil.copy(FIXTURES / "seed_mlp.torchscript.op17.onnx", repo / "n" / "1" / "model.onnx")
        assert wait_for(lambda: client.is_model_ready("n"), timeout=15)
        shutil.rmtree(repo / "n")
        assert wait_for(lambda: not client.is_model_ready("n"), timeout=15)
    finally:
        assert process.stop() == 0


def test_server_metadata_lists_extensions(client):
    assert {"model_repository", "statistics"} <= set(client.get_server_metadata().extensions)

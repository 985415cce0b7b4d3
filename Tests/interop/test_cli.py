"""`maas infer` and `maas models` against a running server, checked with tritonclient and onnxruntime.

`maas infer` splits the rows into requests that the server's batcher may join in any way, so
float outputs are judged against onnxruntime with the rounding bounds of tolerance.py, not bit
for bit; integer outputs (the classifier's labels) must equal what tritonclient gets."""
import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import ROOT, RunningProcess, binary, wait_for
from tolerance import check_against_onnxruntime

FIXTURES = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx"
SEED = FIXTURES / "seed_mlp.torchscript.op17.onnx"
CLASSIFIER = FIXTURES / "sk_mlpclassifier_nozipmap.skl2onnx.op17.onnx"
CNN = FIXTURES / "mnist_cnn.torchscript.op17.onnx"
ROWS = 1000


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for name, model in [("seed_mlp", SEED), ("classifier", CLASSIFIER), ("cnn", CNN)]:
        (repo / name / "1").mkdir(parents=True)
        shutil.copy(model, repo / name / "1" / "model.onnx")
    (repo / "classifier" / "config.json").write_text(json.dumps({"max_batch_size": 16}))
    return repo


def serve(repository, *extra):
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repository), *extra])
    client = grpcclient.InferenceServerClient(process.address)
    if not wait_for(lambda: client.is_server_ready(), timeout=60):
        process.stop()
        pytest.fail("server not ready")
    return process


@pytest.fixture(scope="module")
def server(repository):
    process = serve(repository)
    yield process
    assert process.stop() == 0


@pytest.fixture()
def triton(server):
    return grpcclient.InferenceServerClient(server.address)


def maas(*args, timeout=120):
    return subprocess.run([binary("maas"), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def infer(server, *args):
    return maas("infer", "--server", server.address, *args)


def triton_infer(client, model, x, output):
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy(output)


def no_files_left(directory):
    return not directory.exists() or list(directory.iterdir()) == []


def summary(stdout):
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


@pytest.mark.parametrize("http", [False, True], ids=["grpc", "http"])
@pytest.mark.parametrize("kind", ["npy", "csv", "json"])
def test_infer_writes_every_row_in_order(server, triton, tmp_path, http, kind):
    x = np.random.default_rng(7).standard_normal((ROWS, 10)).astype(np.float32)
    path = tmp_path / f"x.{kind}"
    if kind == "npy":
        np.save(path, x.astype(np.float64))  # converted to the model's FP32
    elif kind == "csv":
        header = ",".join(f"f{i}" for i in range(10))
        np.savetxt(path, x, delimiter=",", header=header, comments="", fmt="%.9g")
    else:
        path.write_text(json.dumps(x.tolist()))
    out = tmp_path / "out"
    result = infer(server, *(["--http"] if http else []), "--model", "seed_mlp", "--input", f"input={path}",
                   "--output-dir", out, "--batch-size", 64, "--concurrency", 4)
    assert result.returncode == 0, result.stderr
    report = summary(result.stdout)
    assert report["rows"] == str(ROWS) and report["requests"] == "16" and report["failures"] == "0"
    assert report["latency p50"].endswith(" ms") and report["latency p99"].endswith(" ms")
    assert sorted(p.name for p in out.iterdir()) == ["output.npy"]
    ours = np.load(out / "output.npy")
    assert ours.shape == (ROWS, 10) and ours.dtype == np.float32
    check_against_onnxruntime(SEED, {"input": x}, {"output": ours})
    direct = np.concatenate([triton_infer(triton, "seed_mlp", x[i:i + 64], "output") for i in range(0, ROWS, 64)])
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("http", [False, True], ids=["grpc", "http"])
def test_max_batch_size_caps_requests_and_int_outputs_match(server, triton, tmp_path, http):
    x = np.random.default_rng(11).standard_normal((ROWS, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    result = infer(server, *(["--http"] if http else []), "--model", "classifier", "--input", f"input={tmp_path / 'x.npy'}",
                   "--output-dir", out, "--batch-size", 100, "--concurrency", 8)
    assert result.returncode == 0, result.stderr
    assert "max_batch_size is 16" in result.stderr
    assert summary(result.stdout)["requests"] == str((ROWS + 15) // 16)
    assert sorted(p.name for p in out.iterdir()) == ["label.npy", "probabilities.npy"]
    labels = np.concatenate([triton_infer(triton, "classifier", x[i:i + 16], "label") for i in range(0, ROWS, 16)])
    np.testing.assert_array_equal(np.load(out / "label.npy"), labels)
    check_against_onnxruntime(CLASSIFIER, {"input": x}, {"probabilities": np.load(out / "probabilities.npy")})


def test_csv_rows_are_reshaped_to_the_model_input(server, tmp_path):
    meta = grpcclient.InferenceServerClient(server.address).get_model_metadata("cnn")
    dims = [int(d) for d in meta.inputs[0].shape[1:]]
    x = np.random.default_rng(2).standard_normal((40, int(np.prod(dims)))).astype(np.float32)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", fmt="%.9g")
    out = tmp_path / "out"
    result = infer(server, "--model", "cnn", "--input", f"{meta.inputs[0].name}={tmp_path / 'x.csv'}", "--output-dir", out,
                   "--batch-size", 8)
    assert result.returncode == 0, result.stderr
    output = meta.outputs[0].name
    check_against_onnxruntime(CNN, {meta.inputs[0].name: x.reshape([-1] + dims)}, {output: np.load(out / f"{output}.npy")})


def test_existing_outputs_are_replaced_only_on_success(server, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "output.npy").write_bytes(b"old")
    np.save(tmp_path / "bad.npy", np.zeros((100, 7), np.float32))
    result = infer(server, "--model", "seed_mlp", "--input", f"input={tmp_path / 'bad.npy'}", "--output-dir", out)
    assert result.returncode == 1
    assert (out / "output.npy").read_bytes() == b"old" and sorted(p.name for p in out.iterdir()) == ["output.npy"]


def test_a_request_the_server_rejects_names_the_rows_and_the_message(server, tmp_path):
    x = np.zeros((300, 10), np.float32)
    bad = np.zeros((300, 9), np.float32)
    np.save(tmp_path / "good.npy", x)
    np.save(tmp_path / "bad.npy", bad)
    out = tmp_path / "out"
    for http in (False, True):
        result = infer(server, *(["--http"] if http else []), "--model", "seed_mlp", "--input", f"input={tmp_path / 'bad.npy'}",
                       "--output-dir", out, "--batch-size", 50, "--concurrency", 1)
        assert result.returncode == 1
        assert "error: rows 0-49 failed twice" in result.stderr and "expects shape" in result.stderr
        assert "nothing written" in result.stdout and summary(result.stdout)["failures"] == "1"
        assert no_files_left(out)


@pytest.mark.parametrize("case, fragment", [
    ("wrong_name", "model 'seed_mlp' has no input 'nope' (its inputs: input)"),
    ("bad_npy", "not a .npy file"),
    ("ragged_csv", "line 3: 9 values, but the first row has 10"),
    ("ragged_json", "not rectangular"),
    ("bad_extension", "expected a .npy, .csv or .json file"),
    ("unknown_model", "NOT_FOUND"),
])
def test_bad_inputs_exit_nonzero_and_write_nothing(server, tmp_path, case, fragment):
    model, name = "seed_mlp", "input"
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((5, 10), np.float32))
    if case == "wrong_name":
        name = "nope"
    elif case == "bad_npy":
        path.write_bytes(b"garbage")
    elif case == "ragged_csv":
        path = tmp_path / "x.csv"
        path.write_text("\n".join([",".join(["1"] * 10), ",".join(["2"] * 10), ",".join(["3"] * 9)]))
    elif case == "ragged_json":
        path = tmp_path / "x.json"
        path.write_text(json.dumps([[1.0] * 10, [2.0] * 9]))
    elif case == "bad_extension":
        path = tmp_path / "x.txt"
        path.write_text("1,2")
    elif case == "unknown_model":
        model = "no_such_model"
    out = tmp_path / "out"
    result = infer(server, "--model", model, "--input", f"{name}={path}", "--output-dir", out)
    assert result.returncode == 1, result.stdout
    assert fragment in result.stderr
    assert no_files_left(out)


def test_a_server_that_dies_mid_run(repository, tmp_path):
    process = serve(repository)
    x = np.random.default_rng(1).standard_normal((200_000, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    run = subprocess.Popen([binary("maas"), "infer", "--server", process.address, "--model", "seed_mlp", "--input",
                            f"input={tmp_path / 'x.npy'}", "--output-dir", str(out), "--batch-size", "16"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(out.glob(".output.npy.partial-*")), timeout=60), "the run did not start writing"
        process.proc.kill()
        process.proc.wait()
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
        process.stop()
    assert run.returncode == 1, stdout + stderr
    assert "failed twice" in stderr and "rows " in stderr
    assert "nothing written" in stdout
    assert no_files_left(out)


def test_ctrl_c_writes_nothing(server, tmp_path):
    x = np.random.default_rng(1).standard_normal((200_000, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    run = subprocess.Popen([binary("maas"), "infer", "--server", server.address, "--model", "seed_mlp", "--input",
                            f"input={tmp_path / 'x.npy'}", "--output-dir", str(out), "--batch-size", "16"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: any(out.glob(".output.npy.partial-*")), timeout=60), "the run did not start writing"
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, stdout + stderr
    assert "nothing written" in stdout
    assert no_files_left(out)


def test_progress_lines_when_stderr_is_not_a_terminal(server, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((100_000, 10), np.float32))
    started = time.monotonic()
    result = infer(server, "--model", "seed_mlp", "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "out",
                   "--batch-size", 16)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("progress: ")]
    if time.monotonic() - started > 1.5:
        assert lines and "rows/s" in lines[0] and "ETA" in lines[0]
    assert "\r" not in result.stderr


def models(server, *args):
    result = maas("models", *args, "--server", server.address, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_models_list_ready_config_stats_json(server, triton):
    index = models(server, "list")
    assert index == [{"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
                     for m in triton.get_model_repository_index().models]
    assert models(server, "ready") == {"live": True, "ready": True}
    assert models(server, "ready", "classifier") == {"name": "classifier", "version": "", "ready": True}
    config = models(server, "config", "classifier")
    expected = triton.get_model_config("classifier", as_json=True)["config"]
    assert config["name"] == expected["name"] and config["max_batch_size"] == expected["max_batch_size"] == 16
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == \
        [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in expected["input"]]
    assert [t["name"] for t in config["output"]] == [t["name"] for t in expected["output"]]
    triton_infer(triton, "classifier", np.zeros((3, 4), np.float32), "label")
    stats = models(server, "stats", "classifier")["model_stats"]
    expected = triton.get_inference_statistics("classifier", as_json=True)["model_stats"]
    assert [s["name"] for s in stats] == [s["name"] for s in expected] == ["classifier"]
    assert stats[0]["inference_count"] == int(expected[0]["inference_count"]) >= 3
    assert stats[0]["inference_stats"]["success"]["count"] == int(expected[0]["inference_stats"]["success"]["count"])
    every = models(server, "stats")["model_stats"]
    assert {s["name"] for s in every} == {"seed_mlp", "classifier", "cnn"}


def test_models_tables_and_errors(server):
    result = maas("models", "list", "--server", server.address)
    assert result.returncode == 0 and result.stdout.splitlines()[0].split() == ["MODEL", "VERSION", "STATE", "REASON"]
    assert "classifier" in result.stdout
    result = maas("models", "ready", "no_such_model", "--server", server.address)
    assert result.returncode == 1 and "not ready" in result.stdout
    result = maas("models", "config", "no_such_model", "--server", server.address)
    assert result.returncode == 1 and "error: NOT_FOUND" in result.stderr
    result = maas("models", "unload", "seed_mlp", "--server", server.address)
    assert result.returncode == 1 and "FAILED_PRECONDITION" in result.stderr
    result = maas("models", "list", "--server", "127.0.0.1:1")
    assert result.returncode == 1 and "cannot connect" in result.stderr


def test_models_load_and_unload_in_explicit_mode(repository):
    process = serve(repository, "--model-control-mode", "explicit", "--load-model", "seed_mlp")
    try:
        triton = grpcclient.InferenceServerClient(process.address)
        assert not triton.is_model_ready("classifier")
        assert models(process, "load", "classifier") == {"name": "classifier", "loaded": True}
        assert triton.is_model_ready("classifier")
        assert models(process, "unload", "seed_mlp") == {"name": "seed_mlp", "unloaded": True}
        assert wait_for(lambda: not triton.is_model_ready("seed_mlp"))
        result = maas("models", "load", "no_such_model", "--server", process.address)
        assert result.returncode == 1 and "NOT_FOUND" in result.stderr
    finally:
        assert process.stop() == 0

"""maas train: its ONNX export in onnxruntime, deployment into a polled repository served to
tritonclient, fine-tuning from a deployed version, Ctrl-C, and bad data."""
import json
import signal
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from conftest import ROOT, RunningProcess, binary, wait_for
from tolerance import check_against_onnxruntime

SEED_RUN = ROOT / "Tests" / "MaaSTrainingTests" / "Fixtures" / "seed_adam_mse"
CLS_RUN = ROOT / "Tests" / "MaaSTrainingTests" / "Fixtures" / "cls_adam_xent"


def train(*args, check=True):
    result = subprocess.run([binary("maas"), "train", *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu", "none"])
def test_export_runs_identically_in_onnxruntime(tmp_path, activation):
    out = tmp_path / "model.onnx"
    train("--data", SEED_RUN / "X.npy", "--targets", SEED_RUN / "Y.npy", "--layers", "10,16,12,10",
          "--activation", activation, "--epochs", 5, "--batch-size", 100, "--output", out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 3 and all(a.i == 1 for n in gemms for a in n.attribute if a.name == "transB")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["training.activation"] == activation and meta["training.layers"] == "10,16,12,10"

    x = np.load(SEED_RUN / "X.npy")[:7]
    np.save(tmp_path / "x.npy", x)
    subprocess.run([binary("maas"), "run", str(out), "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path)],
                   check=True, capture_output=True, timeout=60)
    check_against_onnxruntime(out, {"input": x}, {"output": np.load(tmp_path / "output.npy")})


def test_trained_model_deploys_into_a_polled_repository_and_serves(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    server = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo),
                             "--model-control-mode", "poll", "--repository-poll-secs", "1"])
    try:
        client = grpcclient.InferenceServerClient(server.address)
        assert wait_for(lambda: client.is_server_ready(), timeout=30)
        result = train("--data", SEED_RUN / "X.npy", "--targets", SEED_RUN / "Y.npy", "--layers", "10,20,10",
                       "--epochs", 50, "--repository", repo, "--model", "trained")
        assert "deployed trained version 1" in result.stdout
        assert (repo / "trained" / "config.json").exists()
        assert wait_for(lambda: client.is_model_ready("trained"), timeout=15)

        x = np.load(SEED_RUN / "X.npy")[:8]
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = client.infer("trained", [inp]).as_numpy("output")
        check_against_onnxruntime(repo / "trained" / "1" / "model.onnx", {"input": x}, {"output": served})

        # Training metadata: beside the model and in the served config's parameters.
        stored = json.loads((repo / "trained" / "1" / "training.json").read_text())
        assert stored["optimizer"] == "adam" and stored["epochs"] == "50" and len(stored["data_sha256"]) == 64
        params = client.get_model_config("trained").config.parameters
        assert params["training.data_sha256"].string_value == stored["data_sha256"]
        assert float(params["training.final_loss"].string_value) < 1.06

        # Fine-tune the deployed version: version 2 starts where version 1 ended.
        v1_loss = float(stored["final_loss"])
        result = train("--data", SEED_RUN / "X.npy", "--targets", SEED_RUN / "Y.npy", "--init-from",
                       repo / "trained" / "1" / "model.onnx", "--epochs", 50, "--repository", repo, "--model", "trained")
        assert "deployed trained version 2" in result.stdout
        first_epoch = float(result.stdout.split("epoch 1/50  loss ")[1].split()[0])
        assert abs(first_epoch - v1_loss) < 5e-3, "fine-tuning did not start from version 1's weights"
        assert wait_for(lambda: client.get_model_metadata("trained").versions == ["2"], timeout=15)
        assert client.infer("trained", [inp]).get_response().model_version == "2"

        # A model whose input width contradicts the existing config.json is refused before training.
        np.save(tmp_path / "y5.npy", np.load(SEED_RUN / "Y.npy")[:, :5])
        bad = train("--data", SEED_RUN / "X.npy", "--targets", tmp_path / "y5.npy", "--layers", "10,20,5",
                    "--repository", repo, "--model", "trained", check=False)
        assert bad.returncode == 1 and "config.json of 'trained': output 'output' has dims [10] but the model's are [5]" in bad.stderr
        assert sorted(p.name for p in (repo / "trained").iterdir()) == ["1", "2", "config.json"]
    finally:
        assert server.stop() == 0


def test_classifier_from_csv_with_validation_split(tmp_path):
    x, y = np.load(CLS_RUN / "X.npy"), np.load(CLS_RUN / "Y.npy")
    csv = tmp_path / "cls.csv"
    header = ",".join([f"f{i}" for i in range(10)] + ["label"])
    rows = [",".join([*map(repr, map(float, row)), str(label)]) for row, label in zip(x, y)]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "cls.onnx"
    result = train("--data", csv, "--target-columns", "label", "--layers", "10,32,3", "--loss", "cross-entropy",
                   "--lr", 0.01, "--batch-size", 64, "--shuffle", "--seed", 7, "--epochs", 20,
                   "--validation-split", 0.2, "--output", out)
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 20 and all("val_accuracy" in line for line in lines)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert float(meta["training.validation_accuracy"]) > 0.9
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.astype(np.float32)})[0]
    assert (logits.argmax(1) == y).mean() > 0.9


def test_ctrl_c_stops_after_the_step_and_writes_the_model(tmp_path):
    out = tmp_path / "stopped.onnx"
    proc = subprocess.Popen([binary("maas"), "train", "--data", str(SEED_RUN / "X.npy"), "--targets", str(SEED_RUN / "Y.npy"),
                             "--layers", "10,256,256,10", "--epochs", "100000", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("training MLP")
        proc.stdout.readline()  # the first epoch has finished
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "stopping after this step" in stderr and "interrupted after" in stdout
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["training.interrupted"] == "true" and int(meta["training.completed_epochs"]) < 100000
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("content, message", [
    ("a,b,label\n1,2,0\n3,4\n", "bad.csv:3: expected 3 columns, found 2"),
    ("a,b,label\n1,2,0\n3,nan,1\n", "bad.csv:3:2: nan is not a finite number"),
    ("a,b,label\n1,2,0\n3,4,7\n", "bad.csv:3:3: label 7 is out of range for 3 classes (0..<3)"),
    ("a,b,c,label\n1,2,5,0\n", "bad.csv: rows have 3 features but the model's input width is 2"),
])
def test_bad_data_is_refused_with_file_line_and_column(tmp_path, content, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    result = train("--data", csv, "--target-columns", "label", "--layers", "2,4,3", "--loss", "cross-entropy",
                   "--output", tmp_path / "never.onnx", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {csv.parent}/{message}"
    assert not (tmp_path / "never.onnx").exists()


def test_progress_bar_on_a_terminal_plain_lines_otherwise(tmp_path):
    import os
    import pty
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([binary("maas"), "train", "--data", str(SEED_RUN / "X.npy"), "--targets", str(SEED_RUN / "Y.npy"),
                             "--layers", "10,512,512,10", "--batch-size", "10", "--epochs", "2", "--output", str(tmp_path / "m.onnx")],
                            stdout=subprocess.PIPE, stderr=secondary, text=True)
    os.close(secondary)
    stdout, _ = proc.communicate(timeout=120)
    terminal = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(primary)
    assert proc.returncode == 0
    assert "\r" not in stdout and "epoch 2/2  loss" in stdout
    assert b"\r[" in terminal and b"step " in terminal, terminal[:200]


@pytest.mark.parametrize("args, message", [
    (["--layers", "10,,10"], "--layers must list at least two positive widths, e.g. 10,20,10; got '10,,10'"),
    (["--layers", "10,20,10", "--betas", "0.9,abc"], "--betas takes two numbers, e.g. 0.9,0.999; got '0.9,abc'"),
    (["--layers", "10,20,10", "--validation-split", "0.0001"], "--validation-split 0.0001 of 1000 rows leaves 0 for validation"),
    (["--layers", "10,20,10", "--optimizer", "adam", "--momentum", "0.9"], "momentum and Nesterov are SGD options"),
    (["--layers", "10,30,10", "--init-from", "MODEL"], "--layers 10,30,10 does not match"),
    (["--activation", "tanh", "--init-from", "MODEL"], "--activation tanh does not match"),
    (["--layers", "10,20,10", "--output", "/nonexistent/m.onnx"], "cannot write /nonexistent/m.onnx: /nonexistent is not a writable directory"),
    (["--layers", "10,20,10", "--repository", "REPO_FILE", "--model", "m"], "is not a directory"),
])
def test_bad_arguments_are_refused_before_training(tmp_path, args, message):
    model = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx" / "seed_mlp.torchscript.op17.onnx"
    (tmp_path / "file").write_text("not a directory")
    args = [str(model) if a == "MODEL" else str(tmp_path / "file") if a == "REPO_FILE" else a for a in args]
    if "--output" not in args and "--repository" not in args:
        args += ["--output", str(tmp_path / "never.onnx")]
    result = train("--data", SEED_RUN / "X.npy", "--targets", SEED_RUN / "Y.npy", "--epochs", 1, *args, check=False)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "never.onnx").exists()


def test_a_sync_check_interval_below_one_is_a_usage_error():
    # Checked with the other flags, before any file is read (ArgumentParser's usage exit code).
    result = train("--data", SEED_RUN / "X.npy", "--targets", SEED_RUN / "Y.npy", "--layers", "10,20,10",
                   "--sync-check-steps", 0, "--output", "/tmp/never.onnx", check=False)
    assert result.returncode == 64 and "--sync-check-steps must be at least 1, got 0" in result.stderr, result.stderr

"""Client-side balancing (issue 14, item 3): `maas infer --server a,b,c` spreads its calls round
robin over three replicas (BalancedGRPCClient), and when one of them is stopped mid-run (SIGTERM:
GOAWAY, drain) or killed, its calls move to the others: no row fails, and the outputs equal
onnxruntime's."""
import signal
import subprocess

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import ROOT, MaasServe, binary, wait_for
from tolerance import check_against_onnxruntime

MODEL = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx" / "seed_mlp.torchscript.op17.onnx"


@pytest.fixture()
def replicas(tmp_path):
    repository = tmp_path / "repository"
    (repository / "seed_mlp" / "1").mkdir(parents=True)
    (repository / "seed_mlp" / "1" / "model.onnx").write_bytes(MODEL.read_bytes())
    servers = [MaasServe(tmp_path, "--model-repository", repository, name=f"replica{i}.stderr") for i in range(3)]
    yield servers
    for server in servers:
        server.stop()


def inferences(server):
    stats = grpcclient.InferenceServerClient(server.address).get_inference_statistics("seed_mlp").model_stats
    return stats[0].inference_count if stats else 0


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_infer_over_three_replicas_survives_losing_one(replicas, tmp_path, stop):
    x = np.random.default_rng(3).standard_normal((120_000, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    servers = ",".join(server.address for server in replicas)
    run = subprocess.Popen([binary("maas"), "infer", "--server", servers, "--model", "seed_mlp", "--input",
                            f"input={tmp_path / 'x.npy'}", "--output-dir", str(out), "--batch-size", "16"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: inferences(replicas[1]) > 2_000, timeout=60), "the run did not reach replica 1"
        if stop == "sigterm":
            replicas[1].proc.send_signal(signal.SIGTERM)
            assert replicas[1].proc.wait(timeout=20) == 0
        else:
            replicas[1].proc.kill()
            replicas[1].proc.wait(timeout=20)
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stdout + stderr
    assert "round robin over 3 servers" in stdout + stderr
    output = np.load(out / "output.npy")
    assert output.shape == (120_000, 10)
    check_against_onnxruntime(MODEL, {"input": x}, {"output": output})
    # Every row was answered by the two that stayed or by the one that left, before it left.
    served = [inferences(replicas[0]), inferences(replicas[2])]
    print(f"{stop}: replicas 0 and 2 served {served} rows; {stdout.strip().splitlines()[-1]}")
    assert all(count > 2_000 for count in served)

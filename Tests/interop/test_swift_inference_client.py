"""Our Swift InferenceClient (maas-interop kserve-infer) against a grpcio server implementing
KServe's ModelInfer with onnxruntime (stubs generated from our proto/), and against maas."""
import socket
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient

from conftest import ROOT, RunningProcess, binary, free_port, wait_for

MODEL = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx" / "seed_mlp.torchscript.op17.onnx"


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def swift_infer(port, model, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    return subprocess.run([binary("maas-interop"), "kserve-infer", "--port", str(port), "--model", model,
                           "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)


def test_swift_client_against_a_grpcio_kserve_server(tmp_path):
    port = free_port()
    peer = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "peers" / "kserve_tools.py"), "peer", str(port), f"seed={MODEL}"])
    try:
        assert wait_for(lambda: accepts(port), timeout=30)
        x = np.random.default_rng(1).standard_normal((5, 10)).astype(np.float32)
        result = swift_infer(port, "seed", x, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "output FP32 [5, 10] model_version=1" in result.stdout
        expected = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        np.testing.assert_array_equal(np.load(tmp_path / "output.npy"), expected)
    finally:
        peer.kill()
        peer.wait()


def test_swift_client_against_maas_and_its_errors(tmp_path):
    server = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0"])
    try:
        # The port listens before the model has loaded and warmed up: wait, as a real client's
        # readiness probe would (on a loaded CI machine the warm-up took longer than the first call).
        triton = grpcclient.InferenceServerClient(server.address)
        assert wait_for(lambda: triton.is_server_ready(), timeout=60)
        x = np.ones((3, 10), np.float32)
        result = swift_infer(server.port, "seed", x, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert np.load(tmp_path / "output.npy").shape == (3, 10)
        missing = swift_infer(server.port, "nope", x, tmp_path)
        assert missing.returncode == 1 and missing.stdout.startswith("error: NOT_FOUND: ") and "'nope'" in missing.stdout
        wrong = swift_infer(server.port, "seed", np.ones((3, 7), np.float32), tmp_path)
        assert wrong.returncode == 1 and wrong.stdout.startswith("error: INVALID_ARGUMENT: ") and "expects shape" in wrong.stdout
    finally:
        assert server.stop() == 0

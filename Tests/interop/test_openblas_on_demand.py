"""OpenBLAS is opened when a kernel that may call it is built, not linked (issue 13's idle
footprint): a server whose models run on our panel kernels never maps it, a model that needs it
maps it at load, and a missing library fails that model's load with a message naming the file,
while the server goes on serving the rest."""
import shutil
import subprocess

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient

from conftest import ROOT, MaasServe, binary
from onnx_cases import F, model

SEED = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx" / "seed_mlp.torchscript.op17.onnx"
MISSING = "/nonexistent/libopenblas.so.0"


def cpu_has_panel_kernels():
    flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    return "avx2" in flags and "fma" in flags


def maps_openblas(pid):
    return "libopenblas" in open(f"/proc/{pid}/maps").read()


def activations_product(path):
    """MatMul of two inputs: neither is a constant our kernels pack, so OpenBLAS computes it."""
    m = model([onnx.helper.make_node("MatMul", ["a", "b"], ["y"], name="scores")],
              [("a", F, [2, 4]), ("b", F, [4, 3])], [("y", F, [2, 3])])
    path.parent.mkdir(parents=True)
    onnx.save(m, path)


def repository(tmp_path, with_product):
    repo = tmp_path / "repo"
    (repo / "seed_mlp" / "1").mkdir(parents=True)
    shutil.copy(SEED, repo / "seed_mlp" / "1" / "model.onnx")
    if with_product:
        activations_product(repo / "product" / "1" / "model.onnx")
    return repo


def seed_infers(client):
    x = grpcclient.InferInput("input", [1, 10], "FP32")
    x.set_data_from_numpy(np.ones((1, 10), np.float32))
    return client.infer("seed_mlp", [x]).as_numpy("output").shape[0] == 1


@pytest.mark.skipif(not cpu_has_panel_kernels(), reason="without AVX2 and FMA every GEMM runs on OpenBLAS")
def test_a_server_on_panel_kernels_never_maps_openblas(tmp_path, monkeypatch):
    for forcing in ("MAAS_NO_SMALL_GEMM", "MAAS_KERNEL"):
        monkeypatch.delenv(forcing, raising=False)
    server = MaasServe(tmp_path, "--model-repository", repository(tmp_path, with_product=False))
    try:
        assert seed_infers(grpcclient.InferenceServerClient(server.address))
        assert not maps_openblas(server.proc.pid)
    finally:
        assert server.stop() == 0


def test_a_model_that_needs_openblas_opens_it_at_load(tmp_path):
    server = MaasServe(tmp_path, "--model-repository", repository(tmp_path, with_product=True))
    try:
        client = grpcclient.InferenceServerClient(server.address)
        assert client.is_model_ready("product")
        assert maps_openblas(server.proc.pid)
        a, b = np.arange(8, dtype=np.float32).reshape(2, 4), np.arange(12, dtype=np.float32).reshape(4, 3)
        inputs = [grpcclient.InferInput(name, list(v.shape), "FP32") for name, v in (("a", a), ("b", b))]
        for i, v in zip(inputs, (a, b)):
            i.set_data_from_numpy(v)
        # Small integers: every product and sum is exact in float32, whatever the summation order.
        assert np.array_equal(client.infer("product", inputs).as_numpy("y"), a @ b)
    finally:
        assert server.stop() == 0


def test_missing_openblas_fails_only_the_model_that_needs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MAAS_OPENBLAS_LIBRARY", MISSING)
    server = MaasServe(tmp_path, "--model-repository", repository(tmp_path, with_product=True))
    try:
        client = grpcclient.InferenceServerClient(server.address)
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["product"].state == "UNAVAILABLE"
        reason = index["product"].reason
        assert "MatMul node 'scores' runs on OpenBLAS" in reason and MISSING in reason, reason
        if cpu_has_panel_kernels():
            assert index["seed_mlp"].state == "READY" and seed_infers(client)
    finally:
        assert server.stop() == 0


def run_product(tmp_path, env):
    """`maas run` on the MatMul of two inputs."""
    path = tmp_path / "product" / "model.onnx"
    activations_product(path)
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    np.save(tmp_path / "b.npy", np.zeros((4, 3), np.float32))
    return subprocess.run([binary("maas"), "run", str(path), "--input", f"a={tmp_path / 'a.npy'}",
                           "--input", f"b={tmp_path / 'b.npy'}", "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, env={**env, "PATH": "/usr/bin:/bin"})


def test_a_library_without_the_entry_points_is_refused_by_name(tmp_path):
    """Another shared library in its place (libnghttp2, which maas links anyway): no cblas_sgemm."""
    run = run_product(tmp_path, {"MAAS_OPENBLAS_LIBRARY": "libnghttp2.so.14"})
    assert run.returncode == 1, run.stderr
    assert "libnghttp2.so.14 lacks an entry point" in run.stderr and "cblas_sgemm" in run.stderr, run.stderr


def test_maas_run_and_train_say_which_file_is_missing(tmp_path):
    env = {"MAAS_OPENBLAS_LIBRARY": MISSING}
    run = run_product(tmp_path, env)
    assert run.returncode == 1 and "runs on OpenBLAS, but" in run.stderr and MISSING in run.stderr, run.stderr
    np.save(tmp_path / "x.npy", np.ones((8, 10), np.float32))
    np.save(tmp_path / "y.npy", np.ones((8, 2), np.float32))
    train = subprocess.run([binary("maas"), "train", "--data", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy"),
                            "--layers", "10,4,2", "--loss", "mse", "--epochs", "1", "--output", str(tmp_path / "m.onnx")],
                           capture_output=True, text=True, timeout=120, env={**env, "PATH": "/usr/bin:/bin"})
    assert train.returncode != 0 and "training runs on OpenBLAS, but" in train.stderr and MISSING in train.stderr, train.stderr
    assert not (tmp_path / "m.onnx").exists()

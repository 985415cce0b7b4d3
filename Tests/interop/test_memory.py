"""A served model's resident size: within 1.2x its weights + 20 MiB (weights packed once, the
file's copy dropped, no copy per plan), measured as the server's RSS with the model loaded and
served at several batch sizes minus the RSS of the same server with an empty repository."""
import numpy as np
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper, save

from conftest import RunningProcess, binary, wait_for

MiB = 1 << 20


def resident_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def write_wide_model(path):
    """~100 MB of weights in both forms exporters write a Linear: Gemm(transB=1) with its bias,
    and MatMul by a [K, N] matrix then Add. Twice the weights would exceed the bound."""
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal((4096, 1024), dtype=np.float32) * 0.03
    w1 = rng.standard_normal((4096, 4096), dtype=np.float32) * 0.015
    w2 = rng.standard_normal((1024, 4096), dtype=np.float32) * 0.015
    b = [np.zeros(n, np.float32) for n in (4096, 4096, 1024)]
    inits = [numpy_helper.from_array(a, name) for a, name in
             [(w0, "w0"), (w1, "w1"), (w2, "w2"), (b[0], "b0"), (b[1], "b1"), (b[2], "b2")]]
    nodes = [
        helper.make_node("Gemm", ["input", "w0", "b0"], ["h0"], transB=1),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("MatMul", ["r0", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["output"], transB=1),
    ]
    graph = helper.make_graph(nodes, "wide",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1024])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1024])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return sum(a.nbytes for a in (w0, w1, w2, *b))


def served_rss(repo, requests):
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    try:
        client = grpcclient.InferenceServerClient(process.address)
        assert wait_for(lambda: client.is_server_ready(), timeout=60)
        requests(client)
        return resident_bytes(process.proc.pid)
    finally:
        assert process.stop() == 0


def test_resident_size_is_within_the_weights_bound(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    baseline = served_rss(empty, lambda client: None)

    repo = tmp_path / "repo"
    (repo / "wide" / "1").mkdir(parents=True)
    weights = write_wide_model(repo / "wide" / "1" / "model.onnx")

    def infer(client):
        assert client.is_model_ready("wide")
        for batch in (1, 8, 64):
            x = np.ones((batch, 1024), np.float32)
            inp = grpcclient.InferInput("input", [batch, 1024], "FP32")
            inp.set_data_from_numpy(x)
            out = client.infer("wide", [inp]).as_numpy("output")
            assert out.shape == (batch, 1024) and np.isfinite(out).all()

    loaded = served_rss(repo, infer)
    model = loaded - baseline
    bound = 1.2 * weights + 20 * MiB
    print(f"model resident {model / MiB:.1f} MiB, weights {weights / MiB:.1f} MiB, bound {bound / MiB:.1f} MiB")
    assert model <= bound, (
        f"model resident {model / MiB:.1f} MiB (server {loaded / MiB:.1f} MiB, empty {baseline / MiB:.1f} MiB) "
        f"exceeds 1.2 x {weights / MiB:.1f} MiB weights + 20 MiB = {bound / MiB:.1f} MiB")

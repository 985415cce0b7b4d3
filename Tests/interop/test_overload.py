"""Overload: a slow model (a chain of 3x3 convolutions, ~10 ms a row) driven at 10 times the
rate it can serve, for a few seconds, through raw grpcio calls with a deadline and a few REST
requests. The server sheds what its queue cannot hold (UNAVAILABLE with grpc-retry-pushback-ms,
HTTP 503 with Retry-After), answers every call by its deadline (+100 ms), keeps the admitted
calls' latency bounded by its queue, keeps its memory bounded, and serves at once afterwards."""
import json
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2

from conftest import RunningProcess, binary, raw, wait_for

QUEUE = 8
DEADLINE = 1.0


def slow_model(path, layers=120, channels=32, size=16):
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array((rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32), "w")
    nodes, previous = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("Conv", [previous, "w"], [f"h{i}"], pads=[1, 1, 1, 1]))
        previous = f"h{i}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", channels, size, size])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _rss(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "slow" / "1").mkdir(parents=True)
    slow_model(str(repo / "slow" / "1" / "model.onnx"))
    (repo / "slow" / "config.json").write_text(json.dumps({
        "max_batch_size": 4, "dynamic_batching": {"default_queue_policy": {"max_queue_size": QUEUE}}}))
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    assert wait_for(lambda: grpcclient.InferenceServerClient(process.address).is_model_ready("slow"), timeout=60)
    yield process
    assert process.stop() == 0


def request_bytes(rows=1):
    x = np.ones((rows, 32, 16, 16), np.float32)
    request = service_pb2.ModelInferRequest(model_name="slow")
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def test_shedding_at_ten_times_capacity(server):
    body = request_bytes()
    with grpc.insecure_channel(server.address) as channel:
        infer = raw(channel, "/inference.GRPCInferenceService/ModelInfer")
        # Warm-up: each batch size's first run compiles its plan and times its kernels, so one
        # call of each size (1 to max_batch_size) runs before anything is timed.
        for rows in (1, 2, 3, 4):
            infer(request_bytes(rows), timeout=60)
        # Capacity: closed-loop with 4 in flight (one full batch) for 1.5 s.
        done, stop = [0], time.monotonic() + 1.5
        def closed_loop():
            while time.monotonic() < stop:
                infer(body, timeout=10)
                done[0] += 1
        workers = [threading.Thread(target=closed_loop) for _ in range(4)]
        for w in workers: w.start()
        for w in workers: w.join()
        capacity = done[0] / 1.5
        single = 1 / capacity * 4  # one batch of 4

        # The burst: 10x capacity for 3 s, each call with a 1 s deadline.
        baseline = _rss(server.proc.pid)
        rate, seconds = 10 * capacity, 3.0
        outcomes, lock = [], threading.Lock()
        def record(future, sent):
            finished = time.monotonic()
            try:
                future.result()
                outcome = ("ok", None)
            except grpc.RpcError as error:
                pushback = dict(error.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
                outcome = (error.code().name, pushback)
            with lock:
                outcomes.append((outcome[0], outcome[1], finished - sent))
        start = time.monotonic()
        sent_count, peak = 0, baseline
        rest_answers = []
        while (now := time.monotonic()) - start < seconds:
            due = int((now - start) * rate)
            while sent_count < due:
                sent = time.monotonic()
                future = infer.future(body, timeout=DEADLINE)
                future.add_done_callback(lambda f, s=sent: record(f, s))
                sent_count += 1
            if sent_count % 50 == 0:
                peak = max(peak, _rss(server.proc.pid))
            if len(rest_answers) < 5 and now - start > 1:
                rest_answers.append(rest_infer(server))
            time.sleep(0.002)
        assert wait_for(lambda: len(outcomes) == sent_count, timeout=DEADLINE + 5)

        codes = [code for code, _, _ in outcomes]
        shed = [o for o in outcomes if o[0] == "UNAVAILABLE"]
        admitted = sorted(latency for code, _, latency in outcomes if code == "ok")
        assert set(codes) <= {"ok", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, set(codes)
        assert len(shed) > sent_count / 2, f"{len(shed)} of {sent_count} shed at 10x capacity"
        assert all(pushback is not None and int(pushback) > 0 for _, pushback, _ in shed)
        # Every call answered by its deadline (+100 ms, and the client's own scheduling slack).
        latest = max(latency for _, _, latency in outcomes)
        assert latest < DEADLINE + 0.1 + 0.15, f"slowest answer after {latest:.3f} s"
        # Admitted calls waited at most for the queue ahead of them: (QUEUE / 4 + 1) batches.
        p99 = admitted[int(len(admitted) * 0.99) - 1]
        assert admitted and p99 < (QUEUE / 4 + 2) * single + 0.25, f"admitted p99 {p99:.3f} s, batch {single:.3f} s"
        assert peak - baseline < 64 << 20, f"server grew {(peak - baseline) >> 20} MiB during the burst"
        # REST during the burst: 503 with Retry-After when shed.
        assert all(status in (200, 503) for status, _ in rest_answers) and any(status == 503 for status, _ in rest_answers), rest_answers
        assert all(retry is not None and int(retry) >= 1 for status, retry in rest_answers if status == 503)

        # Once the burst is over, the next call is served at once.
        sent = time.monotonic()
        infer(body, timeout=10)
        assert time.monotonic() - sent < 0.1 + single, "the first call after the burst waited"
        print(f"capacity {capacity:.0f}/s, sent {sent_count}, shed {len(shed)}, admitted {len(admitted)} "
              f"p99 {p99 * 1000:.0f} ms, slowest {latest * 1000:.0f} ms, RSS +{(peak - baseline) >> 20} MiB, REST {rest_answers}")


def rest_infer(server):
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 32, 16, 16],
                                   "parameters": {"binary_data_size": 32768}}]}).encode()
    payload = body + np.ones(8192, np.float32).tobytes()
    request = urllib.request.Request(f"http://{server.address}/v2/models/slow/infer", data=payload, method="POST",
                                     headers={"Inference-Header-Content-Length": str(len(body))})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, None
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Retry-After")

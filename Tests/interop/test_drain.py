"""SIGTERM with long-lived streams open (issue 14, item 0). A grpc.health.v1 Watch and a
ModelStreamInfer stream must not hold the exit for the whole grace period: once unary work has
drained, the Watch says NOT_SERVING and ends, the stream finishes the requests it holds and ends,
both with UNAVAILABLE. A call the grace period does cut is logged by name and the exit status is
non-zero. Peers: grpcio (health stubs from grpcio-health-checking, raw bidi streaming with
tritonclient's protobuf messages), tritonclient for the unary load, h2 for a call that never ends."""
import queue
import signal
import socket
import struct
import threading
import time

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.service_pb2 as service_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import MaasServe
from test_raw_http2 import RawClient

STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def stream_request(index):
    x = np.full((4, 10), index % 7, np.float32)
    request = service_pb2.ModelInferRequest(model_name="seed", id=str(index))
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return request


class StreamInfer:
    """A ModelStreamInfer call fed from a thread every 2 ms; remembers when each request was
    handed to grpcio and what came back for it."""

    def __init__(self, channel):
        self.sent = {}        # id -> monotonic time handed to grpcio
        self.answers = {}     # id -> "ok" or the in-stream error message
        self.unattributed = []
        self.status = None
        self.stop = threading.Event()
        call = channel.stream_stream(STREAM_INFER, request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                     response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
        self.responses = call(self.requests(), timeout=60)
        self.reader = threading.Thread(target=self.read)
        self.reader.start()

    def requests(self):
        index = 0
        while not self.stop.is_set():
            self.sent[str(index)] = time.monotonic()
            yield stream_request(index)
            index += 1
            time.sleep(0.002)

    def read(self):
        try:
            for response in self.responses:
                if response.error_message:
                    # Errors carry no id field: the refusal names the request in its message.
                    ids = [i for i in self.sent if f"request '{i}'" in response.error_message]
                    if ids:
                        self.answers[ids[0]] = response.error_message
                    else:
                        self.unattributed.append(response.error_message)
                else:
                    self.answers[response.infer_response.id] = "ok"
            self.status = grpc.StatusCode.OK
        except grpc.RpcError as error:
            self.status = error.code()
        finally:
            self.stop.set()


def unary_load(address, stop, calls, threads=4):
    def run():
        client = grpcclient.InferenceServerClient(address)
        x = np.ones((2, 10), np.float32)
        inp = grpcclient.InferInput("input", [2, 10], "FP32")
        inp.set_data_from_numpy(x)
        while not stop.is_set():
            started = time.monotonic()
            try:
                client.infer("seed", [inp], client_timeout=20)
                calls.put((started, None))
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                calls.put((started, error))
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers


def test_sigterm_ends_watch_and_stream_infer_under_load(tmp_path):
    server = MaasServe(tmp_path)
    channel = grpc.insecure_channel(server.address)
    statuses, watch_end = [], {}

    def watch():
        try:
            for response in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60):
                statuses.append(response.status)
            watch_end["code"] = grpc.StatusCode.OK
        except grpc.RpcError as error:
            watch_end["code"], watch_end["details"] = error.code(), error.details()

    watcher = threading.Thread(target=watch)
    watcher.start()
    stream = StreamInfer(channel)
    stop, calls = threading.Event(), queue.Queue()
    workers = unary_load(server.address, stop, calls)
    try:
        time.sleep(1.5)
        assert statuses == [SERVING] and len(stream.answers) > 10 and calls.qsize() > 10
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=20)
        exited = time.monotonic() - signalled
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        server.stop()
    watcher.join(10)
    stream.stop.set()
    stream.reader.join(10)
    channel.close()
    print(f"exit {code} {exited * 1000:.0f} ms after SIGTERM; watch {statuses} {watch_end}; "
          f"stream {stream.status}, {len(stream.sent)} sent, {len(stream.answers)} answered")

    # Exited cleanly, long before the 30 s grace period.
    assert code == 0, server.stderr_path.read_text()
    assert exited < 5, f"exit took {exited:.1f} s"
    # The watcher was told, then the call ended.
    assert statuses == [SERVING, NOT_SERVING]
    assert watch_end["code"] == grpc.StatusCode.UNAVAILABLE, watch_end
    assert "shutting down" in watch_end["details"]
    # Every stream request handed over well before SIGTERM (50 ms: it is on the wire) was run;
    # later ones were run, refused in-stream by name, or are past the stream's end.
    assert stream.status == grpc.StatusCode.UNAVAILABLE
    early = [i for i, t in stream.sent.items() if t < signalled - 0.05]
    assert early and all(stream.answers.get(i) == "ok" for i in early), \
        [(i, stream.answers.get(i)) for i in early if stream.answers.get(i) != "ok"][:5]
    for answer in stream.answers.values():
        assert answer == "ok" or "server is shutting down" in answer, answer
    assert not stream.unattributed, stream.unattributed
    # Unary calls made before SIGTERM all succeeded.
    results = list(calls.queue)
    failed_before = [(t, e) for t, e in results if e is not None and t < signalled]
    assert not failed_before, failed_before[:3]
    assert len(results) > 20


def test_grace_period_running_out_names_the_cut_call_and_fails_the_exit(tmp_path):
    server = MaasServe(tmp_path, "--shutdown-grace-secs", "1")
    client = RawClient(server.address)
    try:
        # A ModelInfer whose request message never completes: 10 of its announced 1,000 bytes.
        client.request("/inference.GRPCInferenceService/ModelInfer", struct.pack(">BI", 0, 1000) + b"x" * 10, end=False)
        time.sleep(0.3)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=15)
        exited = time.monotonic() - signalled
    finally:
        client.sock.close()
        server.stop()
    log = server.stderr_path.read_text()
    print(f"exit {code} after {exited:.2f} s")
    assert code != 0
    assert 1 <= exited < 5
    cut = [line for line in log.splitlines() if "call cut" in line]
    assert len(cut) == 1 and "/inference.GRPCInferenceService/ModelInfer" in cut[0], log
    assert "grace period (1 s) ran out: 1 call was cut" in log


def test_http1_request_cut_by_the_grace_period_is_logged(tmp_path):
    server = MaasServe(tmp_path, "--shutdown-grace-secs", "1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        # A body that never arrives whole.
        sock.sendall(b"POST /v2/models/seed/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{\"inputs\"")
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=15)
    finally:
        sock.close()
        server.stop()
    log = server.stderr_path.read_text()
    assert code != 0
    assert "HTTP/1.1 request cut" in log and "1 call was cut" in log, log

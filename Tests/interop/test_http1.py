"""HTTP/1.1 on the serving port (KServe v2 REST health and metadata) beside gRPC: curl, Python's
http.client and raw sockets for pipelining, Expect: 100-continue and misbehaving clients."""
import http.client
import json
import re
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT, RunningProcess, binary, wait_for
from tolerance import check_against_onnxruntime

SEED = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx" / "seed_mlp.torchscript.op17.onnx"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "seed_mlp" / "1").mkdir(parents=True)
    shutil.copy(SEED, repo / "seed_mlp" / "1" / "model.onnx")
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo),
                              "--http-header-timeout", "1", "--handshake-timeout", "1"])
    client = grpcclient.InferenceServerClient(process.address)
    assert wait_for(lambda: client.is_server_ready(), timeout=30)
    yield process
    assert process.stop() == 0


def get(server, path, method="GET", body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


def test_curl_health_probes(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/seed_mlp/ready", "/v2/models/seed_mlp/versions/1/ready"):
        result = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w", "%{http_code}", f"http://{server.address}{path}"],
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == 0 and result.stdout == "200", (path, result)
    missing = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{server.address}/v2/models/nope/ready"],
                             capture_output=True, text=True, timeout=10)
    assert missing.stdout == "400", "KServe: a 4xx means not ready"


def test_metadata_matches_grpc(server):
    response, data = get(server, "/v2/models/seed_mlp")
    assert response.status == 200 and response.getheader("content-type") == "application/json"
    rest = json.loads(data)
    grpc_meta = grpcclient.InferenceServerClient(server.address).get_model_metadata("seed_mlp", as_json=True)
    assert rest["name"] == grpc_meta["name"] and rest["versions"] == grpc_meta["versions"]
    assert rest["platform"] == grpc_meta["platform"]
    for kind in ("inputs", "outputs"):
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in rest[kind]] == \
               [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in grpc_meta[kind]]
    response, data = get(server, "/v2")
    assert response.status == 200 and json.loads(data)["name"] == "maas"


def test_errors_have_grpcs_text_and_http_status(server):
    response, data = get(server, "/v2/models/nope")
    with pytest.raises(InferenceServerException) as grpc_error:
        grpcclient.InferenceServerClient(server.address).get_model_metadata("nope")
    assert response.status == 404 and json.loads(data)["error"] == grpc_error.value.message()
    response, data = get(server, "/v2/health/live", method="POST", body=b"")
    assert response.status == 405 and "GET" in response.getheader("allow")
    response, data = get(server, "/nowhere")
    assert response.status == 404 and "no route for GET /nowhere" in json.loads(data)["error"]
    response, _ = get(server, "/v2/health/live", method="HEAD")
    assert response.status == 200


def test_pipelined_requests_are_answered_in_order(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /v2/models/seed_mlp HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /v2/models/nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    assert statuses == [b"200", b"404", b"200"], data


def test_expect_100_continue_and_oversized_bodies(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/seed_mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(b"{}")
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400") and b"needs 'inputs'" in answer, answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/seed_mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413") and b"exceeds the 67108864-byte limit" in answer, answer
        assert s.recv(65536) == b"", "the connection closes"


def test_misbehaving_clients_are_cut_off_and_others_served(server):
    # A request head dripped byte by byte is closed once the header timeout (1 s here) passes.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        start, closed = time.monotonic(), False
        while time.monotonic() - start < 5:
            try:
                s.sendall(b"X")
                s.settimeout(0.2)
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - start < 3
    # A head past the 16 KiB limit (gRPC's header list limit) is 413 and the connection closes;
    # a malformed one is 400 naming the parse error.
    for request, status, fragment in (
            (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n", b"413", b"request head exceeds the 16384-byte limit"),
            (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Many: b\r\n" * 3000 + b"\r\n", b"413", b"request head exceeds"),
            (b"GET /v2/health/live HTTP/1.1\r\nHost x\r\n\r\n", b"400", b"malformed HTTP/1.1 request"),
            (b"BREW /v2 HTCPCP/1.0\r\n\r\n", b"400", b"malformed HTTP/1.1 request")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            try:
                s.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = b""
            try:
                while chunk := s.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            assert answer.startswith(b"HTTP/1.1 " + status) and fragment in answer and b"connection: close" in answer, answer[:300]
    # A connection that sends nothing is closed after the handshake timeout (1 s here).
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        start = time.monotonic()
        assert s.recv(1) == b"" and time.monotonic() - start < 3
    # Meanwhile everyone else is served, over HTTP/1.1 and gRPC on the same port.
    assert get(server, "/v2/health/ready")[0].status == 200
    x = grpcclient.InferInput("input", [1, 10], "FP32")
    x.set_data_from_numpy(np.ones((1, 10), np.float32))
    assert grpcclient.InferenceServerClient(server.address).infer("seed_mlp", [x]).as_numpy("output").shape == (1, 10)


def test_a_preface_arriving_in_pieces_is_still_http2(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        for piece in (preface[:3], preface[3:17], preface[17:]):
            s.sendall(piece)
            time.sleep(0.05)
        s.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS frame
        frame = s.recv(9)
        assert len(frame) == 9 and frame[3] == 0x04, f"expected the server's SETTINGS, got {frame!r}"


def curl_post(server, path, body):
    result = subprocess.run(["curl", "-s", "-w", "\\n%{http_code}", "-X", "POST", f"http://{server.address}{path}", "-d", body],
                            capture_output=True, text=True, timeout=10)
    text, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(text)


def test_predict_answers_as_the_seed_service_did(server):
    x = np.arange(20, dtype=np.float32).reshape(2, 10) / 10
    status, body = curl_post(server, "/predict/seed_mlp", json.dumps({"input": x.tolist()}))
    assert status == 200
    tensor = grpcclient.InferInput("input", [2, 10], "FP32")
    tensor.set_data_from_numpy(x)
    expected = grpcclient.InferenceServerClient(server.address).infer("seed_mlp", [tensor]).as_numpy("output")
    # The same request alone through either frontend reaches the same plan: equal bits (JSON
    # carries each float32 exactly as a double).
    np.testing.assert_array_equal(np.asarray(body["output"], np.float32), expected)


@pytest.mark.parametrize("path, body, status, message", [
    ("/predict/seed_mlp", '{"input": [[1,2,3,4,5,6,7,8,9,10], [1,2,3,4,5,6,7,8,"x",10]]}', 400, "expected a number at input[1][8], got a string"),
    ("/predict/seed_mlp", '{"input": [[1,2,3], [4,5]]}', 400, "input[1] has 2 elements where its siblings have 3"),
    ("/predict/seed_mlp", '{"input": [[1,2,3,4,5,6,7,8,9]]}', 400, "model 'seed_mlp' version 1: input 'input' expects shape [-1, 10], got [1, 9]"),
    ("/predict/seed_mlp", '{"input": [[1,2,3,4,5,6,7,8,9,10]', 400, "the body is not valid JSON"),
    ("/predict/seed_mlp", '{"rows": []}', 400, "unknown field 'rows'"),
    ("/predict/nope", '{"input": [[1]]}', 404, "unknown model 'nope'"),
    ("/predict", '{"input": [[1]]}', 404, "no default model for /predict: start the server with --predict-model NAME"),
])
def test_predict_errors_say_what_and_where(server, path, body, status, message):
    got_status, got = curl_post(server, path, body)
    assert got_status == status and message in got["error"], (got_status, got)


def test_predict_defaults_to_the_built_in_seed():
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0"])
    try:
        client = grpcclient.InferenceServerClient(process.address)
        assert wait_for(lambda: client.is_server_ready(), timeout=30)
        status, body = curl_post(process, "/predict", '{"input": [[1,2,3,4,5,6,7,8,9,10]]}')
        assert status == 200 and np.asarray(body["output"]).shape == (1, 10)
    finally:
        assert process.stop() == 0


def test_kserve_infer_with_nested_json_data(server):
    x = np.arange(20, dtype=np.float32).reshape(2, 10) / 7
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [2, 10], "datatype": "FP32", "data": x.tolist()}]}
    status, answer = curl_post(server, "/v2/models/seed_mlp/versions/1/infer", json.dumps(body))
    assert status == 200 and answer["id"] == "r1" and answer["model_version"] == "1"
    output = answer["outputs"][0]
    tensor = grpcclient.InferInput("input", [2, 10], "FP32")
    tensor.set_data_from_numpy(x)
    expected = grpcclient.InferenceServerClient(server.address).infer("seed_mlp", [tensor]).as_numpy("output")
    assert output["shape"] == [2, 10] and output["datatype"] == "FP32"
    np.testing.assert_array_equal(np.asarray(output["data"], np.float32).reshape(2, 10), expected)
    body["inputs"][0]["data"] = x.tolist()[:1]
    status, answer = curl_post(server, "/v2/models/seed_mlp/infer", json.dumps(body))
    assert status == 400 and answer["error"] == "input 'input' has 10 values in data, its shape needs 20"


def test_shutdown_answers_the_request_in_progress_then_closes():
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0"])
    assert wait_for(lambda: grpcclient.InferenceServerClient(process.address).is_server_ready(), timeout=30)
    body = b'{"input": [[1,2,3,4,5,6,7,8,9,10]]}'
    with socket.create_connection(("127.0.0.1", process.port), timeout=10) as busy, \
            socket.create_connection(("127.0.0.1", process.port), timeout=10) as idle:
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        busy.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.2)
        process.proc.terminate()
        assert idle.recv(1) == b"", "an idle keep-alive connection is closed at once"
        time.sleep(0.3)
        assert process.proc.poll() is None, "the server waits for the request in progress"
        busy.sendall(body[10:])
        answer = b""
        while chunk := busy.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower(), answer
    assert process.proc.wait(timeout=10) == 0


def _infer_body(inputs, outputs=None, **extra):
    body = {"inputs": inputs, **extra}
    if outputs is not None:
        body["outputs"] = outputs
    return json.dumps(body).encode()


_X = {"name": "input", "shape": [1, 10], "datatype": "FP32"}


@pytest.mark.parametrize("body, headers, message", [
    (b"{", {}, "the inference request is not valid JSON"),
    (b"[]", {}, "the inference request must be a JSON object"),
    (_infer_body([{"shape": [1, 10], "datatype": "FP32", "data": [0] * 10}]), {}, "inputs[0] needs a name"),
    (_infer_body([{**_X, "datatype": "FP33", "data": [0] * 10}]), {}, "input 'input' needs a datatype"),
    (_infer_body([{**_X, "shape": [-1, 10], "data": [0] * 10}]), {}, "input 'input' has invalid shape"),
    (_infer_body([_X]), {}, "input 'input' has neither data nor binary_data_size"),
    (_infer_body([{**_X, "data": ["a"] + [0] * 9}]), {}, "input 'input' data[0] must be a number for FP32"),
    (_infer_body([{**_X, "datatype": "BOOL", "data": [1] * 10}]), {}, "data[0] must be true or false for BOOL"),
    (_infer_body([{**_X, "datatype": "BYTES", "data": [1] * 10}]), {}, "data[0] must be a string for BYTES"),
    (_infer_body([{**_X, "parameters": {"binary_data_size": 40}}]), {}, "binary_data_size 40, but 0 bytes of binary data are left"),
    (_infer_body([{**_X, "data": [0] * 10}]) + b"xx", {"Inference-Header-Content-Length": None}, "2 bytes of binary data follow the inputs that no input claims"),
    (_infer_body([{**_X, "data": [0] * 10}]), {"Inference-Header-Content-Length": "100000"}, "is larger than the body"),
    (_infer_body([{**_X, "data": [0] * 10}]), {"Inference-Header-Content-Length": "ten"}, "Inference-Header-Content-Length must be a byte count"),
    (_infer_body([{**_X, "data": [0] * 10}], outputs=[{"parameters": {}}]), {}, "outputs[0] needs a name"),
    (_infer_body([{**_X, "data": [0] * 10}], parameters=[1]), {}, "parameters must be an object"),
])
def test_kserve_infer_bad_bodies_name_the_problem(server, body, headers, message):
    headers = dict(headers)
    if headers.get("Inference-Header-Content-Length", "") is None:
        headers["Inference-Header-Content-Length"] = str(len(body) - 2)
    response, data = get(server, "/v2/models/seed_mlp/infer", method="POST", body=body, headers=headers)
    assert response.status == 400 and message in json.loads(data)["error"], (response.status, data)


def _predict_request(row, close=False):
    body = json.dumps({"input": [row]}).encode()
    return (b"POST /predict/seed_mlp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + (b"Connection: close\r\n" if close else b"") + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def _responses(data):
    """Splits pipelined HTTP/1.1 responses (each with content-length) into (status, body)."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))
        answers.append((int(head.split(b" ")[1]), rest[:length]))
        data = rest[length:]
    return answers


def test_pipelined_inferences_run_together_and_answer_in_order(server):
    """32 pipelined /predict requests in one write: they reach the batcher together (fewer
    executions than requests) and each answer is its own request's, in order."""
    stats = grpcclient.InferenceServerClient(server.address)
    before = stats.get_inference_statistics("seed_mlp").model_stats[0]
    rows = np.random.default_rng(12).standard_normal((32, 10)).astype(np.float32)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"".join(_predict_request(row.tolist(), close=i == 31) for i, row in enumerate(rows)))
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    answers = _responses(data)
    assert [status for status, _ in answers] == [200] * 32
    outputs = np.array([json.loads(body)["output"][0] for _, body in answers], dtype=np.float32)
    check_against_onnxruntime(SEED, {"input": rows}, {"output": outputs})
    after = stats.get_inference_statistics("seed_mlp").model_stats[0]
    assert after.inference_count - before.inference_count == 32
    assert after.execution_count - before.execution_count < 32, "pipelined requests were batched"


def test_chunked_request_bodies(server):
    body = b'{"input": [[1,2,3,4,5,6,7,8,9,10]]}'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:20], body[20:])) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /predict/seed_mlp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    [(status, answer)] = _responses(data)
    assert status == 200 and len(json.loads(answer)["output"][0]) == 10


def _rss(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_a_client_that_never_reads_is_paused_not_buffered(server):
    """Pipelined requests from a client that reads none of the answers: once the socket's send
    buffer and the server's outbound high-water mark fill, the server stops reading it, so its
    memory stays bounded while other clients are served."""
    request = b"GET /v2/models/seed_mlp HTTP/1.1\r\nHost: x\r\n\r\n"
    baseline = _rss(server.proc.pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.setblocking(False)
        sent, deadline = 0, time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                sent += stuck.send(request * 256)
            except BlockingIOError:
                time.sleep(0.05)
        # The server took only what its limits allow: far less than the client tried to send.
        print(f"sent {sent} bytes before the server stopped reading")
        assert sent < 64 << 20
        assert get(server, "/v2/health/live")[0].status == 200
        grown = _rss(server.proc.pid) - baseline
        assert grown < 64 << 20, f"server grew {grown} bytes for a client that does not read"


def test_a_truncated_body_is_refused_and_loses_nothing(server):
    """A body shorter than its Content-Length, then end of input: 400 naming it, nothing else lost."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /predict/seed_mlp HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b'{"input": [[1,')
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400") and b"malformed HTTP/1.1 request" in data, data
    assert get(server, "/v2/health/ready")[0].status == 200


def test_a_client_that_half_closes_after_its_requests_gets_every_answer(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"".join(_predict_request([float(i)] * 10) for i in range(3)))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert [status for status, _ in _responses(data)] == [200, 200, 200]

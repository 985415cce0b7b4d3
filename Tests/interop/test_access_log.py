"""maas serve --access-log: one JSON line per request over every frontend (gRPC by tritonclient and
grpcio, REST over HTTP/1.1 and h2c, /predict, /metrics, health), refused ones included
(401/403/UNAUTHENTICATED/PERMISSION_DENIED, bad input, unknown model); the token's name and never
the token; strings from the wire escaped; re-opened on SIGHUP after a rename (logrotate); '-'
for standard output; a path that cannot be opened stops the server at start."""
import datetime
import hashlib
import http.client
import json
import re
import signal
import socket
import subprocess
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import MaasServe as Server, binary, free_port, stop_process, wait_for
from test_rest_h2c import H2Client

RUNNER = "runner-s3cr3t.token"   # infer
READER = "reader-s3cr3t.token"   # read
TOKENS = [RUNNER, READER]
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
PROTOCOLS = {"grpc", "grpc+tls", "h2c", "h2", "http/1.1", "http/1.1+tls", "http/1.0", "http/1.0+tls"}
KEYS = ["time", "peer", "protocol", "method", "path", "status", "status_name", "model", "version", "token",
        "bytes_in", "bytes_out", "queue_us", "compute_us", "duration_us"]


def digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


class Tail:
    """The lines a file gains, each parsed as JSON (every line must be one object)."""

    def __init__(self, path):
        self.path = path
        self.seen = 0

    def lines(self):
        if not self.path.exists():
            return []
        text = self.path.read_text()
        assert text == "" or text.endswith("\n"), "lines are written whole"
        return [json.loads(line) for line in text.splitlines()]

    def new(self, count=1):
        """Waits for `count` more lines and returns them; no more may follow."""
        assert wait_for(lambda: len(self.lines()) >= self.seen + count, timeout=5), (count, self.lines()[self.seen:])
        time.sleep(0.05)
        lines = self.lines()
        fresh = lines[self.seen:]
        self.seen = len(lines)
        assert len(fresh) == count, fresh
        return fresh

    def one(self):
        return self.new(1)[0]


def check_shape(line):
    """The fields every line has, their types, and nothing else."""
    assert set(line) <= set(KEYS), line
    assert list(line) == [key for key in KEYS if key in line], "members in the documented order"
    assert TIME.match(line["time"]), line
    assert re.match(r"^127\.0\.0\.1:\d+$", line["peer"]), line
    assert line["protocol"] in PROTOCOLS
    for key in ("status", "bytes_in", "bytes_out", "duration_us"):
        assert isinstance(line[key], int) and line[key] >= 0, (key, line)
    for key in ("queue_us", "compute_us"):
        assert key not in line or isinstance(line[key], int) and line[key] >= 0
    assert None not in line.values(), "a field that does not apply is left out, never null"
    if line["protocol"].startswith("grpc"):
        assert "method" not in line and "status_name" in line
    else:
        assert "method" in line and "status_name" not in line


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    path = tmp / "access.log"
    tokens = tmp / "tokens"
    tokens.write_text(f"{digest(RUNNER)} runner infer\n{digest(READER)} reader read\n")
    server = Server(tmp, "--auth-tokens", tokens, "--access-log", path)
    yield server, path
    assert server.stop() == 0
    text = path.read_text() + server.stderr_path.read_text()
    for token in TOKENS:
        assert token not in text and digest(token) not in text, "a token reached a log"
    for candidate in tmp.glob("access.log*"):  # the file renamed by the SIGHUP test too
        assert not any(token in candidate.read_text() for token in TOKENS)


@pytest.fixture()
def log(served):
    tail = Tail(served[1])
    time.sleep(0.1)  # lines of what came before (readiness polls) are written by now
    tail.seen = len(tail.lines())
    return tail


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def rest(server, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def seed_inputs(rows=2):
    tensor = grpcclient.InferInput("input", [rows, 10], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 10), np.float32))
    return [tensor]


def test_grpc_calls(served, log):
    server, _ = served
    client = grpcclient.InferenceServerClient(server.address)
    result = client.infer("seed", seed_inputs(), headers=bearer(RUNNER))
    assert result.as_numpy("output").shape == (2, 10)
    line = log.one()
    check_shape(line)
    assert line["protocol"] == "grpc" and line["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert (line["status"], line["status_name"]) == (0, "OK")
    assert line["model"] == "seed" and line["version"] == "1" and line["token"] == "runner"
    assert line["bytes_in"] > 80 and line["bytes_out"] > 80, "the tensors' bytes at least"
    assert "queue_us" in line and "compute_us" in line
    assert line["duration_us"] >= line["queue_us"]
    logged = datetime.datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - logged).total_seconds()) < 30, "UTC, and the request's time"

    # Health is open: no token, no model, no batcher.
    assert client.is_server_live()
    line = log.one()
    check_shape(line)
    assert line["path"] == "/inference.GRPCInferenceService/ServerLive" and line["status"] == 0
    assert not {"token", "model", "queue_us", "compute_us"} & set(line)

    # A metadata call names its model and version, and is checked against the read scope.
    client.get_model_metadata("seed", "1", headers=bearer(READER))
    line = log.one()
    assert (line["model"], line["version"], line["token"], line["status"]) == ("seed", "1", "reader", 0)
    assert "queue_us" not in line

    # grpc.health.v1 through grpcio's generic stub: logged like any call.
    with grpc.insecure_channel(server.address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None)
        check(b"", timeout=10)
    line = log.one()
    assert line["path"] == "/grpc.health.v1.Health/Check" and line["status"] == 0


def test_refused_grpc_calls(served, log):
    server, _ = served
    client = grpcclient.InferenceServerClient(server.address)
    cases = [
        ({}, 16, "UNAUTHENTICATED", None),
        (bearer("not-a-known-token"), 16, "UNAUTHENTICATED", None),
        (bearer(READER), 7, "PERMISSION_DENIED", "reader"),
    ]
    for headers, code, name, token in cases:
        with pytest.raises(InferenceServerException):
            client.infer("seed", seed_inputs(), headers=headers)
        line = log.one()
        check_shape(line)
        assert (line["status"], line["status_name"], line.get("token")) == (code, name, token)
        assert "queue_us" not in line, "refused before the batcher"

    with pytest.raises(InferenceServerException):
        client.infer("nope", seed_inputs(), headers=bearer(RUNNER))
    line = log.one()
    assert (line["status_name"], line["model"], line["token"]) == ("NOT_FOUND", "nope", "runner")
    assert "version" not in line

    # The wrong width: refused by the model's checks, before its queue.
    bad = grpcclient.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("seed", [bad], headers=bearer(RUNNER))
    line = log.one()
    assert (line["status_name"], line["model"], line["version"]) == ("INVALID_ARGUMENT", "seed", "1")

    # Refused by the transport: a method nobody serves.
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/no.Such/Method", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as error:
            call(b"", timeout=10)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    line = log.one()
    assert (line["path"], line["status"], line["status_name"]) == ("/no.Such/Method", 12, "UNIMPLEMENTED")


def test_rest_over_http1(served, log):
    server, _ = served
    assert rest(server, "GET", "/v2/health/ready")[0] == 200
    line = log.one()
    check_shape(line)
    assert (line["protocol"], line["method"], line["path"], line["status"]) == ("http/1.1", "GET", "/v2/health/ready", 200)

    client = httpclient.InferenceServerClient(server.address)
    tensor = httpclient.InferInput("input", [1, 10], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 10), np.float32), binary_data=False)
    assert client.infer("seed", [tensor], headers=bearer(RUNNER)).as_numpy("output").shape == (1, 10)
    line = log.one()
    check_shape(line)
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v2/models/seed/infer", 200)
    assert (line["model"], line["version"], line["token"]) == ("seed", "1", "runner")
    assert line["bytes_in"] > 0 and line["bytes_out"] > 0 and "queue_us" in line and "compute_us" in line

    body = json.dumps({"input": [[0.5] * 10]}).encode()
    status, data = rest(server, "POST", "/predict", body, bearer(RUNNER))
    assert status == 200
    line = log.one()
    assert (line["path"], line["status"], line["model"], line["token"]) == ("/predict", 200, "seed", "runner")
    assert (line["bytes_in"], line["bytes_out"]) == (len(body), len(data)) and "compute_us" in line

    # Bad input, no token, a token without the scope.
    for headers, expected, token in [(bearer(RUNNER), 400, "runner"), ({}, 401, None), (bearer(READER), 403, "reader")]:
        status, _ = rest(server, "POST", "/predict", b"{not json", headers)
        assert status == expected
        line = log.one()
        assert (line["status"], line.get("token"), line["bytes_in"]) == (expected, token, 9)

    status, data = rest(server, "GET", "/metrics")
    assert status == 200
    assert re.search(rb"^maas_access_log_dropped_total(\{\})? 0$", data, re.M), "the drop counter is exported"
    line = log.one()
    assert (line["path"], line["status"], line["bytes_out"]) == ("/metrics", 200, len(data))

    assert rest(server, "HEAD", "/v2/health/live")[0] == 200
    line = log.one()
    assert (line["method"], line["bytes_out"]) == ("HEAD", 0)


def test_wire_strings_are_escaped(served, log):
    server, _ = served
    # Percent-escapes decode into the model name: a quote, a backslash, a control byte.
    status, _ = rest(server, "GET", "/v2/models/we%22ird%5Cname%01/ready")
    assert status == 400
    line = log.one()
    assert line["model"] == 'we"ird\\name\x01'
    assert line["path"] == "/v2/models/we%22ird%5Cname%01/ready"
    # Sent raw: a quote and a backslash in the request target itself.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b'GET /v2/"quoted\\path HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
        while sock.recv(65536):
            pass
    line = log.one()
    assert (line["path"], line["status"]) == ('/v2/"quoted\\path', 401), "an unknown route needs a token first"
    # A request that does not parse is logged without a method or path.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
        while sock.recv(65536):
            pass
    line = log.one()
    assert set(line) <= set(KEYS) and TIME.match(line["time"]) and line["protocol"] == "http/1.1"
    assert line["status"] == 400 and "method" not in line and "path" not in line


def test_rest_over_h2c(served, log):
    server, _ = served
    client = H2Client(server.port)
    try:
        assert client.request("GET", "/v2/health/live")[0] == 200
        line = log.one()
        check_shape(line)
        assert (line["protocol"], line["method"], line["path"], line["status"]) == ("h2c", "GET", "/v2/health/live", 200)
        status, _, body = client.request("GET", "/v2/models/seed/config", headers=[("authorization", f"Bearer {READER}")])
        assert status == 200
        line = log.one()
        assert (line["protocol"], line["model"], line["token"], line["bytes_out"]) == ("h2c", "seed", "reader", len(body))
    finally:
        client.close()


def test_concurrent_calls_each_get_one_line(served, log):
    server, _ = served
    client = grpcclient.InferenceServerClient(server.address)
    done = []
    for index in range(20):
        client.async_infer("seed", seed_inputs(1), lambda result, error: done.append(error), headers=bearer(RUNNER),
                           request_id=str(index))
    assert wait_for(lambda: len(done) == 20, timeout=20) and done == [None] * 20
    lines = log.new(20)
    assert all(line["status"] == 0 and line["token"] == "runner" and "compute_us" in line for line in lines)
    assert len({line["peer"] for line in lines}) == 1, "one connection"


def test_sighup_reopens_after_rename(served, log):
    server, path = served
    assert rest(server, "GET", "/v2/health/live")[0] == 200
    log.one()
    rotated = path.with_name("access.log.1")
    path.rename(rotated)
    before = len(Tail(rotated).lines())
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(path.exists, timeout=5), "the path is opened anew"
    assert server.proc.poll() is None, "SIGHUP does not stop the server"
    assert rest(server, "GET", "/v2/health/ready")[0] == 200
    fresh = Tail(path)
    assert wait_for(lambda: len(fresh.lines()) == 1, timeout=5)
    assert fresh.lines()[0]["path"] == "/v2/health/ready"
    assert len(Tail(rotated).lines()) == before, "nothing more goes to the renamed file"
    assert "access log reopened" in server.stderr_path.read_text()


def test_standard_output(tmp_path):
    server = Server(tmp_path, "--access-log", "-", stdout=subprocess.PIPE)
    try:
        lines = []
        while True:
            line = json.loads(server.proc.stdout.readline())
            lines.append(line)
            check_shape(line)
            if line["path"].endswith("/ServerReady") and line["status"] == 0:
                break
        assert all(line["path"] == "/inference.GRPCInferenceService/ServerReady" for line in lines)
    finally:
        assert server.stop() == 0


def test_a_path_that_cannot_be_opened_stops_the_server(tmp_path):
    missing = tmp_path / "no-such-dir" / "access.log"
    result = subprocess.run([binary("maas"), "serve", "--port", str(free_port()), "--access-log", str(missing)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert f"cannot open access log '{missing}'" in result.stderr and "No such file or directory" in result.stderr


def test_tls_protocols(tmp_path):
    from test_tls import PKI, health, secure_channel
    (tmp_path / "pki").mkdir()
    pki = PKI(tmp_path / "pki")
    path = tmp_path / "access.log"
    # Ready once the cleartext readiness poll answers: cleartext is allowed beside TLS.
    server = Server(tmp_path, "--tls-cert", pki.server_cert, "--tls-key", pki.server_key, "--allow-cleartext",
                    "--access-log", path)
    port = server.port
    try:
        log = Tail(path)
        time.sleep(0.1)
        log.seen = len(log.lines())
        with secure_channel(server, pki) as channel:
            health(channel)
        line = log.one()
        check_shape(line)
        assert (line["protocol"], line["path"]) == ("grpc+tls", "/grpc.health.v1.Health/Check")
        for flag, protocol in [("--http1.1", "http/1.1+tls"), ("--http2", "h2")]:
            run = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(pki.ca.path), flag, "-o", "/dev/null",
                                  f"https://localhost:{port}/v2/health/live"], capture_output=True, timeout=20)
            assert run.returncode == 0, run.stderr
            line = log.one()
            check_shape(line)
            assert (line["protocol"], line["path"], line["status"]) == (protocol, "/v2/health/live", 200)
        assert rest(server, "GET", "/v2/health/live")[0] == 200
        assert log.one()["protocol"] == "http/1.1"
    finally:
        assert server.stop() == 0

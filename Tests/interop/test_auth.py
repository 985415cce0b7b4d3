"""--auth-tokens: bearer tokens with scopes, checked by grpcio (metadata), tritonclient.grpc and
tritonclient.http (headers) and plain HTTP/1.1 (http.client): 401/UNAUTHENTICATED without a
known token, 403/PERMISSION_DENIED naming the scope a token lacks, health and /metrics open
unless closed, per-token counts in /metrics, SIGHUP reloads (a bad file keeps the old tokens),
bad files refused at start with their line number, and no token ever on the server's stderr."""
import hashlib
import http.client
import json
import shutil
import signal
import subprocess
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from conftest import ROOT, binary, stop_process, wait_for
from test_rest_h2c import H2Client

SEED = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx" / "seed_mlp.torchscript.op17.onnx"
READER = "reader-Token.1~+/"     # read
RUNNER = "runner_tok3n=="       # infer
OPS = "ops-0123456789abcdef"    # admin,read,infer
NEW = "fresh-token-after-hup"
UNKNOWN = "not-in-the-file"
TOKENS = [READER, RUNNER, OPS, NEW, UNKNOWN]


def digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def token_file(path, entries):
    lines = ["# written by test_auth.py"] + [f"{digest(token)} {name} {scopes}" for token, name, scopes in entries]
    path.write_text("\n".join(lines) + "\n")


STANDARD = [(READER, "reader", "read"), (RUNNER, "runner", "infer"), (OPS, "ops", "admin,read,infer")]


class Server:
    """maas-interop serve-models with stderr in a file (trace logging must not block on a pipe)."""

    def __init__(self, tmp_path, *extra, tokens=STANDARD):
        self.tokens = tmp_path / "tokens"
        token_file(self.tokens, tokens)
        repo = tmp_path / "repo"
        if not repo.exists():
            (repo / "seed_mlp" / "1").mkdir(parents=True)
            shutil.copy(SEED, repo / "seed_mlp" / "1" / "model.onnx")
        self.stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}"
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(
            [binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo),
             "--model-control-mode", "explicit", "--load-model", "seed_mlp", "--log-level", "trace",
             "--auth-tokens", str(self.tokens), *extra],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} {self.stderr_path.read_text()}")
        self.port = int(line.split()[-1])
        self.address = f"127.0.0.1:{self.port}"
        ready = grpcclient.InferenceServerClient(self.address)
        headers = {"authorization": f"Bearer {OPS}"}
        assert wait_for(lambda: ready.is_model_ready("seed_mlp", headers=headers), timeout=60)

    def stop(self):
        stop_process(self.proc)
        self.stderr.close()
        return self.proc.returncode

    def log(self):
        return self.stderr_path.read_text()


def assert_no_token_in(text):
    for token in TOKENS:
        assert token not in text, f"token {token!r} reached the log"
        assert digest(token) not in text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = Server(tmp_path_factory.mktemp("auth"))
    yield process
    assert process.stop() == 0
    assert_no_token_in(process.log())


@pytest.fixture(scope="module")
def closed(tmp_path_factory):
    process = Server(tmp_path_factory.mktemp("closed"), "--auth-health", "--auth-metrics")
    yield process
    assert process.stop() == 0
    assert_no_token_in(process.log())


def bearer(token):
    return [("authorization", f"Bearer {token}")]


def rest(server, method, path, token=None, body=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


def infer_request():
    request = service_pb2.ModelInferRequest(model_name="seed_mlp")
    tensor = request.inputs.add(name="input", datatype="FP32")
    tensor.shape.extend([2, 10])
    request.raw_input_contents.append(np.ones((2, 10), np.float32).tobytes())
    return request.SerializeToString()


def raw_call(server, path, request=b"", metadata=None):
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        return call(request, metadata=metadata, timeout=10)


def grpc_code(server, path, request=b"", metadata=None):
    try:
        raw_call(server, path, request, metadata)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details()


INFER = "/inference.GRPCInferenceService/ModelInfer"
METADATA = "/inference.GRPCInferenceService/ServerMetadata"


# gRPC (grpcio with metadata)

def test_grpc_without_or_with_unknown_token_is_unauthenticated(server):
    assert grpc_code(server, INFER, infer_request()) == (grpc.StatusCode.UNAUTHENTICATED, "no credentials: send 'authorization: Bearer TOKEN'")
    code, message = grpc_code(server, INFER, infer_request(), bearer(UNKNOWN))
    assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, "unknown bearer token")
    code, message = grpc_code(server, METADATA, metadata=[("authorization", "Basic dXNlcjpwYXNz")])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer scheme" in message
    code, message = grpc_code(server, METADATA, metadata=[("authorization", "Bearer")])
    assert (code, message) == (grpc.StatusCode.UNAUTHENTICATED, "empty bearer token")
    code, _ = grpc_code(server, METADATA, metadata=bearer(READER) + bearer(READER))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_token_with_trailing_whitespace_is_refused(server):
    # nghttp2 refuses a header value with trailing whitespace (RFC 9113 §8.2.1) before we see it;
    # either way the call is not served.
    for value in (f"Bearer {READER} ", f"Bearer {READER}\t", "Bearer "):
        code, _ = grpc_code(server, METADATA, metadata=[("authorization", value)])
        assert code != grpc.StatusCode.OK, repr(value)
    # Inside the value it reaches us, and is malformed.
    code, message = grpc_code(server, METADATA, metadata=[("authorization", f"Bearer {READER} x")])
    assert code == grpc.StatusCode.UNAUTHENTICATED and message.startswith("malformed bearer token")


def test_grpc_scopes(server):
    code, message = grpc_code(server, INFER, infer_request(), bearer(READER))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message == "token 'reader' lacks the 'infer' scope this call needs"
    assert grpc_code(server, INFER, infer_request(), bearer(RUNNER))[0] == grpc.StatusCode.OK
    assert grpc_code(server, METADATA, metadata=bearer(READER))[0] == grpc.StatusCode.OK
    code, message = grpc_code(server, METADATA, metadata=bearer(RUNNER))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'read'" in message
    # The scheme is case-insensitive (RFC 7235).
    assert grpc_code(server, METADATA, metadata=[("authorization", f"bearer {READER}")])[0] == grpc.StatusCode.OK


def test_grpc_stream_infer_checked_before_any_message(server):
    with grpc.insecure_channel(server.address) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                       request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as refused:
            list(stream(iter([infer_request()]), metadata=bearer(READER), timeout=10))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:
            list(stream(iter([infer_request()]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(stream(iter([infer_request(), infer_request()]), metadata=bearer(RUNNER), timeout=10))
        assert len(answers) == 2


def test_grpc_batched_calls_are_checked_one_by_one(server):
    # Calls that arrive in one read cycle reach the handler together: the refused ones must not
    # take the allowed ones with them.
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        futures = [call.future(infer_request(), metadata=bearer(RUNNER if i % 2 else READER), timeout=10) for i in range(20)]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
    assert codes == [grpc.StatusCode.OK if i % 2 else grpc.StatusCode.PERMISSION_DENIED for i in range(20)]


def test_grpc_health_open_by_default(server):
    assert grpc_code(server, "/grpc.health.v1.Health/Check")[0] == grpc.StatusCode.OK
    assert grpc_code(server, "/inference.GRPCInferenceService/ServerLive")[0] == grpc.StatusCode.OK
    assert grpc_code(server, "/inference.GRPCInferenceService/ServerReady")[0] == grpc.StatusCode.OK


# tritonclient

def test_tritonclient_grpc_headers(server):
    client = grpcclient.InferenceServerClient(server.address)
    x = grpcclient.InferInput("input", [2, 10], "FP32")
    x.set_data_from_numpy(np.ones((2, 10), np.float32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("seed_mlp", [x])
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as refused:
        client.infer("seed_mlp", [x], headers={"authorization": f"Bearer {READER}"})
    assert refused.value.status() == "StatusCode.PERMISSION_DENIED" and "'infer'" in refused.value.message()
    result = client.infer("seed_mlp", [x], headers={"authorization": f"Bearer {RUNNER}"})
    assert result.as_numpy("output").shape == (2, 10)
    assert client.get_model_config("seed_mlp", headers={"authorization": f"Bearer {READER}"}).config.name == "seed_mlp"


def test_tritonclient_http_headers(server):
    client = httpclient.InferenceServerClient(server.address)
    x = httpclient.InferInput("input", [2, 10], "FP32")
    x.set_data_from_numpy(np.ones((2, 10), np.float32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("seed_mlp", [x], headers={"Authorization": f"Bearer {UNKNOWN}"})
    assert refused.value.status() == "401"
    with pytest.raises(InferenceServerException) as refused:
        client.infer("seed_mlp", [x], headers={"Authorization": f"Bearer {READER}"})
    assert refused.value.status() == "403" and "'infer'" in refused.value.message()
    result = client.infer("seed_mlp", [x], headers={"Authorization": f"Bearer {RUNNER}"})
    assert result.as_numpy("output").shape == (2, 10)
    assert client.get_server_metadata(headers={"Authorization": f"Bearer {READER}"})["name"]


def test_admin_loads_and_unloads(server):
    client = grpcclient.InferenceServerClient(server.address)
    for token in (READER, RUNNER):
        with pytest.raises(InferenceServerException) as refused:
            client.unload_model("seed_mlp", headers={"authorization": f"Bearer {token}"})
        assert refused.value.status() == "StatusCode.PERMISSION_DENIED" and "'admin'" in refused.value.message()
    admin = {"authorization": f"Bearer {OPS}"}
    client.unload_model("seed_mlp", headers=admin)
    assert wait_for(lambda: not client.is_model_ready("seed_mlp"))
    response, _ = rest(server, "POST", "/v2/repository/models/seed_mlp/load", token=READER)
    assert response.status == 403
    response, _ = rest(server, "POST", "/v2/repository/models/seed_mlp/load", token=OPS)
    assert response.status == 200
    assert client.is_model_ready("seed_mlp")


# REST (HTTP/1.1)

def test_rest_401_carries_a_bearer_challenge(server):
    response, body = rest(server, "GET", "/v2/models/seed_mlp/config")
    assert response.status == 401
    assert response.getheader("www-authenticate") == 'Bearer realm="maas"'
    assert json.loads(body) == {"error": "no credentials: send 'authorization: Bearer TOKEN'"}
    response, body = rest(server, "GET", "/v2/models/seed_mlp/config", token=UNKNOWN)
    assert response.status == 401
    assert response.getheader("www-authenticate") == 'Bearer realm="maas", error="invalid_token"'
    assert json.loads(body) == {"error": "unknown bearer token"}
    response, _ = rest(server, "GET", "/v2", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status == 401 and response.getheader("www-authenticate") == 'Bearer realm="maas"'
    response, _ = rest(server, "GET", "/v2", headers={"Authorization": "Bearer"})
    assert response.status == 401 and 'error="invalid_token"' in response.getheader("www-authenticate")
    # Unknown routes and wrong methods answer 404/405 only to a known token.
    assert rest(server, "GET", "/no/such/route")[0].status == 401
    assert rest(server, "GET", "/no/such/route", token=RUNNER)[0].status == 404
    assert rest(server, "GET", "/v2/models/seed_mlp/infer")[0].status == 401
    assert rest(server, "GET", "/v2/models/seed_mlp/infer", token=RUNNER)[0].status == 405


def test_rest_token_with_trailing_whitespace_is_refused(server):
    # Refused as on gRPC (where nghttp2 refuses the header itself): a credential that is not
    # byte for byte one RFC 6750 token never matches, rather than being trimmed into one.
    for value in (f"Bearer {READER} ", f"Bearer {READER}\t", f"Bearer {READER} x"):
        response, body = rest(server, "GET", "/v2", headers={"Authorization": value})
        assert response.status == 401, repr(value)
        assert response.getheader("www-authenticate") == 'Bearer realm="maas", error="invalid_token"'
        assert json.loads(body)["error"].startswith("malformed bearer token")
    assert rest(server, "GET", "/v2", token=READER)[0].status == 200


def test_rest_403_names_the_scope(server):
    response, body = rest(server, "POST", "/v2/models/seed_mlp/infer", token=READER,
                          body=json.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}]}))
    assert response.status == 403
    assert response.getheader("www-authenticate") == 'Bearer realm="maas", error="insufficient_scope", scope="infer"'
    assert json.loads(body) == {"error": "token 'reader' lacks the 'infer' scope this call needs"}
    response, _ = rest(server, "POST", "/v2/models/seed_mlp/infer", token=RUNNER,
                       body=json.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": [0.0] * 10}]}))
    assert response.status == 200
    assert rest(server, "GET", "/v2/models/stats", token=RUNNER)[0].status == 403
    assert rest(server, "GET", "/v2/models/stats", token=READER)[0].status == 200


def test_rest_over_h2c_is_checked_too(server):
    client = H2Client(server.port)
    try:
        status, headers, _ = client.request("GET", "/v2/models/seed_mlp/config")
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="maas"'
        status, headers, body = client.request("GET", "/v2/models/seed_mlp/config", headers=[("authorization", f"Bearer {RUNNER}")])
        assert status == 403 and 'scope="read"' in headers["www-authenticate"]
        assert json.loads(body) == {"error": "token 'runner' lacks the 'read' scope this call needs"}
        status, _, body = client.request("GET", "/v2/models/seed_mlp/config", headers=[("authorization", f"Bearer {READER}")])
        assert status == 200 and json.loads(body)["name"] == "seed_mlp"
    finally:
        client.close()


def test_openai_routes_answer_in_the_openai_shape(server):
    response, body = rest(server, "POST", "/v1/embeddings", body=b'{"input": "x", "model": "m"}',
                          headers={"content-type": "application/json"})
    assert response.status == 401 and response.getheader("www-authenticate") == 'Bearer realm="maas"'
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    response, body = rest(server, "GET", "/v1/models", token=RUNNER)
    assert response.status == 403 and json.loads(body)["error"]["code"] == "insufficient_permissions"
    assert rest(server, "GET", "/v1/models", token=READER)[0].status == 200


def test_rest_health_open_by_default(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/seed_mlp/ready"):
        assert rest(server, "GET", path)[0].status == 200, path


def test_metrics_open_by_default_and_count_by_name(server):
    before = rest(server, "GET", "/metrics")[1].decode()
    for _ in range(3):
        raw_call(server, METADATA, metadata=bearer(READER))
    grpc_code(server, INFER, infer_request(), bearer(READER))
    response, body = rest(server, "GET", "/metrics")
    assert response.status == 200
    text = body.decode()
    assert "# HELP maas_token_requests_total" in text

    def count(text, token, result):
        for line in text.splitlines():
            if line.startswith(f'maas_token_requests_total{{token="{token}",result="{result}"}} '):
                return float(line.split()[-1])
        return 0.0

    assert count(text, "reader", "allowed") - count(before, "reader", "allowed") == 3
    assert count(text, "reader", "forbidden") - count(before, "reader", "forbidden") == 1
    assert count(text, "", "unauthenticated") >= 1
    assert_no_token_in(text)


# --auth-health, --auth-metrics

def test_closed_health(closed):
    assert grpc_code(closed, "/grpc.health.v1.Health/Check")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(closed, "/inference.GRPCInferenceService/ServerLive")[0] == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(closed, "/grpc.health.v1.Health/Check", metadata=bearer(RUNNER))[0] == grpc.StatusCode.OK
    response, _ = rest(closed, "GET", "/v2/health/ready")
    assert response.status == 401 and response.getheader("www-authenticate") == 'Bearer realm="maas"'
    assert rest(closed, "GET", "/v2/health/ready", token=READER)[0].status == 200


def test_closed_metrics(closed):
    response, _ = rest(closed, "GET", "/metrics")
    assert response.status == 401
    response, _ = rest(closed, "GET", "/metrics", token=RUNNER)
    assert response.status == 403 and 'scope="read"' in response.getheader("www-authenticate")
    response, body = rest(closed, "GET", "/metrics", token=READER)
    assert response.status == 200 and b"maas_token_requests_total" in body


# SIGHUP and bad files

def test_sighup_reloads_and_a_bad_file_keeps_the_old_tokens(tmp_path):
    process = Server(tmp_path)
    try:
        assert grpc_code(process, METADATA, metadata=bearer(READER))[0] == grpc.StatusCode.OK
        token_file(process.tokens, [(NEW, "fresh", "read"), (OPS, "ops", "admin,read,infer")])
        process.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: grpc_code(process, METADATA, metadata=bearer(NEW))[0] == grpc.StatusCode.OK)
        assert grpc_code(process, METADATA, metadata=bearer(READER))[0] == grpc.StatusCode.UNAUTHENTICATED
        assert rest(process, "GET", "/v2", token=NEW)[0].status == 200
        assert rest(process, "GET", "/v2", token=READER)[0].status == 401

        # A bad line: the old tokens stay, the log names the line.
        process.tokens.write_text(f"{digest(READER)} reader read\n{digest(RUNNER)} runner write\n")
        process.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "line 2" in process.log())
        assert "unknown scope 'write'" in process.log()
        assert grpc_code(process, METADATA, metadata=bearer(NEW))[0] == grpc.StatusCode.OK
        assert grpc_code(process, METADATA, metadata=bearer(READER))[0] == grpc.StatusCode.UNAUTHENTICATED

        # A missing file too.
        process.tokens.unlink()
        process.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "cannot read the token file" in process.log())
        assert grpc_code(process, METADATA, metadata=bearer(NEW))[0] == grpc.StatusCode.OK
    finally:
        assert process.stop() == 0
    assert_no_token_in(process.log())


@pytest.mark.parametrize("text, line, message", [
    ("# ok\n{reader} reader read\n{runner} runner write\n", 3, "unknown scope 'write'"),
    ("{reader} reader\n", 1, "expected 'SHA256HEX NAME SCOPES', got 2 fields"),
    ("{reader} reader read\n{reader} again infer\n", 2, "the same token digest is already on line 1"),
    ("{upper} reader read\n", 1, "lower-case hex"),
    (f"{READER} reader read\n", 1, "not a SHA-256 hex digest"),
])
def test_bad_file_is_refused_at_start(tmp_path, text, line, message):
    tokens = tmp_path / "tokens"
    tokens.write_text(text.format(reader=digest(READER), runner=digest(RUNNER), upper=digest(READER).upper()))
    for command in (["maas-interop", "serve-models"], ["maas", "serve"]):
        result = subprocess.run([binary(command[0]), command[1], "--port", "0", "--auth-tokens", str(tokens)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert f"{tokens}: line {line}: " in result.stderr and message in result.stderr, result.stderr
        assert_no_token_in(result.stdout + result.stderr)


def test_auth_flags_need_a_token_file():
    result = subprocess.run([binary("maas"), "serve", "--port", "0", "--auth-health"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "need --auth-tokens" in result.stderr

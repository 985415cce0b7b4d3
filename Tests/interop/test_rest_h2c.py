"""KServe REST over h2c: an HTTP/2 client (the `h2` library) sending plain HTTP requests to the
gRPC port gets REST answers, on the same connection as gRPC calls, with the same limits."""
import json
import socket
import struct

import h2.config
import h2.connection
import h2.events
import pytest
import tritonclient.grpc as grpcclient

from conftest import RunningProcess, binary, wait_for


@pytest.fixture(scope="module")
def server():
    # The built-in seed model: nothing to prepare, and /predict runs it.
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0"])
    assert wait_for(lambda: grpcclient.InferenceServerClient(process.address).is_server_ready(), timeout=30)
    yield process
    assert process.stop() == 0


class H2Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20})
        self.sock.sendall(self.conn.data_to_send())

    def close(self):
        self.sock.close()

    def send(self, method, path, body=b"", headers=()):
        stream = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "localhost"), *headers]
        self.conn.send_headers(stream, fields, end_stream=not body)
        if body:
            self._send_body(stream, body)
        self.sock.sendall(self.conn.data_to_send())
        return stream

    def _send_body(self, stream, body):
        offset = 0
        while offset < len(body):
            window = min(self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size)
            if window == 0:
                self.sock.sendall(self.conn.data_to_send())
                self._pump()
                continue
            chunk = body[offset:offset + window]
            offset += len(chunk)
            self.conn.send_data(stream, chunk, end_stream=offset == len(body))

    def _pump(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        events = self.conn.receive_data(data)
        self.sock.sendall(self.conn.data_to_send())
        return events

    def responses(self, streams):
        """Collects (status, headers, body) per stream until each has ended or been reset."""
        pending = set(streams)
        answers = {s: {"headers": {}, "body": b"", "reset": None, "trailers": {}} for s in streams}
        while pending:
            for event in self._pump():
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id in answers:
                    answers[event.stream_id]["headers"] = dict(event.headers)
                elif isinstance(event, h2.events.TrailersReceived) and event.stream_id in answers:
                    answers[event.stream_id]["trailers"] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived) and event.stream_id in answers:
                    answers[event.stream_id]["body"] += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    pending.discard(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    answers[event.stream_id]["reset"] = event.error_code
                    pending.discard(event.stream_id)
            self.sock.sendall(self.conn.data_to_send())
        return answers

    def request(self, method, path, body=b"", headers=()):
        stream = self.send(method, path, body, headers)
        answer = self.responses([stream])[stream]
        return int(answer["headers"][":status"]), answer["headers"], answer["body"]


@pytest.fixture()
def client(server):
    c = H2Client(server.port)
    yield c
    c.close()


def test_health_over_h2c(client):
    assert client.request("GET", "/v2/health/ready")[0] == 200
    assert client.request("GET", "/v2/health/live")[0] == 200
    status, headers, body = client.request("GET", "/v2")
    assert status == 200 and json.loads(body)["name"] == "maas"
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) == len(body)


def test_head_has_no_body(client):
    status, headers, body = client.request("HEAD", "/v2")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_predict_and_kserve_infer_over_h2c(client):
    status, _, body = client.request("POST", "/predict", b'{"input": [[1,2,3,4,5,6,7,8,9,10]]}', [("content-type", "application/json")])
    assert status == 200
    predicted = json.loads(body)["output"]
    request = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 10], "data": list(range(1, 11))}]}
    status, _, body = client.request("POST", "/v2/models/seed/infer", json.dumps(request).encode(), [("content-type", "application/json")])
    output = json.loads(body)["outputs"][0]
    # The same request through two routes runs the same plan alone: the same bits.
    assert status == 200 and output["shape"] == [1, len(predicted[0])] and output["data"] == predicted[0]


def test_rest_and_grpc_share_a_connection(client):
    """Many REST requests and a gRPC call interleaved on one connection each get their own answer."""
    streams = [client.send("GET", "/v2/models/seed/ready") for _ in range(20)]
    grpc_stream = client.send("POST", "/grpc.health.v1.Health/Check", struct.pack(">?I", False, 0),
                              [("content-type", "application/grpc"), ("te", "trailers")])
    streams.append(client.send("GET", "/v2/models/nope"))
    answers = client.responses(streams + [grpc_stream])
    assert all(answers[s]["headers"][":status"] == "200" for s in streams[:20])
    assert answers[streams[-1]]["headers"][":status"] == "404"
    assert "unknown model 'nope'" in json.loads(answers[streams[-1]]["body"])["error"]
    grpc_answer = answers[grpc_stream]
    assert grpc_answer["headers"]["content-type"] == "application/grpc" and grpc_answer["trailers"]["grpc-status"] == "0"


def test_errors_over_h2c(client):
    status, headers, body = client.request("GET", "/v2/models/seed/infer")
    assert status == 405 and headers["allow"] == "POST"
    assert client.request("GET", "/nowhere")[0] == 404
    status, _, body = client.request("POST", "/predict", b'{"input": [[1, "x"]]}', [("content-type", "application/json")])
    assert status == 400 and json.loads(body)["error"] == "expected a number at input[0][1], got a string"


def test_grpc_paths_keep_grpc_refusals(client):
    """A gRPC method's path with another content-type is a broken gRPC call, not REST: 415."""
    status, headers, _ = client.request("POST", "/grpc.health.v1.Health/Check", b"{}", [("content-type", "application/json")])
    assert status == 415 and headers["grpc-status"] == "13"


def test_oversized_body_is_413_and_the_connection_lives(server):
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--max-receive-message-size", str(1 << 20)])
    assert wait_for(lambda: grpcclient.InferenceServerClient(process.address).is_server_ready(), timeout=30)
    c = H2Client(process.port)
    try:
        status, _, body = c.request("POST", "/predict", b"[" * ((1 << 20) + 10), [("content-type", "application/json")])
        assert status == 413 and "exceeds the limit" in json.loads(body)["error"]
        assert c.request("GET", "/v2/health/live")[0] == 200
    finally:
        c.close()
        assert process.stop() == 0

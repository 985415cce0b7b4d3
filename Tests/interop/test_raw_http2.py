"""Our server against a raw HTTP/2 peer (the h2 library): requests no gRPC library would send,
a client that stops reading, and signals."""
import os
import signal
import socket
import struct
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

from conftest import RunningProcess, binary, raw

ECHO = "/maas.testing.Echo/"


def message(payload, flag=0):
    return struct.pack(">BI", flag, len(payload)) + payload


class RawClient:
    def __init__(self, address, window=None):
        host, port = address.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.streams = {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, body=b"", end=True, headers=()):
        sid = self.conn.get_next_available_stream_id()
        base = {":method": "POST", ":scheme": "http", ":path": path, ":authority": "test",
                "content-type": "application/grpc", "te": "trailers"}
        for name, value in headers:
            if value is None:
                base.pop(name, None)
            else:
                base[name] = value
        self.conn.send_headers(sid, list(base.items()), end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        self.streams[sid] = {"headers": {}, "trailers": {}, "data": b"", "reset": None, "ended": False}
        return sid

    def wait(self, sid, timeout=10):
        deadline = time.monotonic() + timeout
        stream = self.streams[sid]
        while not (stream["ended"] or stream["reset"] is not None):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {sid} did not finish")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.handle(chunk)
        return stream

    def handle(self, chunk):
        for event in self.conn.receive_data(chunk):
            sid = getattr(event, "stream_id", None)
            stream = self.streams.get(sid)
            if isinstance(event, h2.events.ResponseReceived):
                stream["headers"] = dict(event.headers)
                if event.stream_ended is not None:
                    stream["ended"] = True
            elif isinstance(event, h2.events.TrailersReceived):
                stream["trailers"] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                stream["data"] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                stream["ended"] = True
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                stream["reset"] = event.error_code
        self.flush()

    def status(self, stream):
        fields = stream["trailers"] or stream["headers"]
        return int(fields["grpc-status"]) if "grpc-status" in fields else None

    def close(self):
        self.sock.close()


def test_wrong_content_type_is_http_415(swift_server):
    client = RawClient(swift_server.address)
    sid = client.request(ECHO + "Unary", message(b"x"), headers=[("content-type", "text/plain")])
    stream = client.wait(sid)
    assert stream["headers"][":status"] == "415"
    assert "content-type" in stream["headers"].get("grpc-message", "")
    client.close()


def test_bad_timeout_and_encoding(swift_server):
    client = RawClient(swift_server.address)
    sid = client.request(ECHO + "Unary", message(b"x"), headers=[("grpc-timeout", "12x")])
    assert client.status(client.wait(sid)) == grpc.StatusCode.INTERNAL.value[0]
    sid = client.request(ECHO + "Unary", message(b"x", flag=1), headers=[("grpc-encoding", "gzip")])
    stream = client.wait(sid)
    assert client.status(stream) == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert stream["headers"]["grpc-accept-encoding"] == "identity"
    client.close()


def test_rst_mid_message_then_the_connection_still_works(swift_server):
    client = RawClient(swift_server.address)
    sid = client.request(ECHO + "Unary", message(b"y" * 1000)[:300], end=False)
    client.conn.reset_stream(sid)
    client.flush()
    sid = client.request(ECHO + "Unary", message(b"fresh"))
    stream = client.wait(sid)
    assert client.status(stream) == 0 and stream["data"] == message(b"fresh")
    client.close()


def test_server_enforces_grpc_timeout_without_client_help(swift_server):
    client = RawClient(swift_server.address)
    start = time.monotonic()
    sid = client.request(ECHO + "Slow", message(b"z"), headers=[("grpc-timeout", "200m"), ("x-sleep-ms", "10000")])
    stream = client.wait(sid, timeout=5)
    elapsed = time.monotonic() - start
    assert client.status(stream) == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert 0.15 < elapsed < 3
    client.close()


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_client_that_stops_reading_cannot_grow_server_memory_without_bound():
    server = RunningProcess([binary("maas-interop"), "serve", "--port", "0"])
    stalled = None
    try:
        baseline = rss_bytes(server.proc.pid)
        stalled = RawClient(server.address)
        # 60 streams x 8 MiB of responses = 480 MiB asked for (in under 64 KiB of requests, the
        # window this client believes it has); the per-connection queue bound is 256 MiB, and
        # this client never reads.
        for _ in range(60):
            stalled.request(ECHO + "ServerStream", message(b"q" * 1024), headers=[("x-count", "8192")])
        time.sleep(2)
        grown = rss_bytes(server.proc.pid) - baseline
        print(f"server RSS grew by {grown >> 20} MiB")
        assert grown < 400 * 1024 * 1024, f"server grew by {grown >> 20} MiB"
        # Everyone else is still served meanwhile.
        with grpc.insecure_channel(server.address) as ch:
            assert raw(ch, ECHO + "Unary")(b"still here", timeout=5) == b"still here"
    finally:
        if stalled is not None:
            stalled.close()
        assert server.stop() == 0


def test_sigterm_lets_in_flight_calls_finish():
    server = RunningProcess([binary("maas-interop"), "serve", "--port", "0"])
    with grpc.insecure_channel(server.address) as ch:
        future = raw(ch, ECHO + "Slow").future(b"in flight", timeout=10, metadata=(("x-sleep-ms", "700"),))
        time.sleep(0.2)
        server.proc.send_signal(signal.SIGTERM)
        assert future.result() == b"in flight"
    assert server.proc.wait(timeout=10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)

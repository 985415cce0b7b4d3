"""HTTP/2 conformance cases h2spec 2.6 found (RFC 9113 sections 5.1, 5.1.1, 5.1.2, 5.3.1, 6.1,
6.3, 6.9), each sent as raw frames (hpack for the header blocks) to `maas serve`'s port: the
server must answer with the stream or connection error the RFC names, or accept the frame."""
import socket
import struct
import time

import hpack
import pytest

from conftest import RunningProcess, binary, wait_for

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PROTOCOL_ERROR, STREAM_CLOSED, REFUSED_STREAM = 1, 5, 7
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CLOSED = "closed"


@pytest.fixture(scope="module")
def server():
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0"])
    yield process
    assert process.stop() == 0


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


class Connection:
    """A client that speaks frames: handshake, send, and read what the server sends."""

    def __init__(self, port, settings=b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.encoder = hpack.Encoder()
        self.buffer = b""
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
        self.server_settings = {}
        while True:
            kind, flags, stream, payload = self.read()
            if kind == SETTINGS and not flags & ACK:
                self.server_settings = {struct.unpack(">H", payload[i:i + 2])[0]: struct.unpack(">I", payload[i + 2:i + 6])[0]
                                        for i in range(0, len(payload), 6)}
                self.sock.sendall(frame(SETTINGS, ACK, 0))
                break

    def headers(self, stream, end_stream=True, path="/", method="GET"):
        block = self.encoder.encode([(":method", method), (":scheme", "http"), (":path", path), (":authority", "localhost")])
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)

    def send(self, *frames):
        self.sock.sendall(b"".join(frames))

    def read(self):
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags, stream = struct.unpack(">BBI", self.buffer[3:9])
        payload, self.buffer = self.buffer[9:9 + length], self.buffer[9 + length:]
        return kind, flags, stream & 0x7FFFFFFF, payload

    def wait_for(self, accept, seconds=3):
        """Frames until `accept(frame)` is true (returns it); CLOSED when the server closes,
        None when nothing accepted came in time."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                received = self.read()
            except socket.timeout:
                continue
            except (ConnectionError, OSError):
                return CLOSED
            if received[0] == SETTINGS and not received[1] & ACK:
                self.sock.sendall(frame(SETTINGS, ACK, 0))
            if accept(received):
                return received
        return None

    def close(self):
        self.sock.close()


def error_code(received):
    kind, _, _, payload = received
    return struct.unpack(">I", payload[4:8] if kind == GOAWAY else payload[:4])[0] & 0x7FFFFFFF


def expect_error(conn, codes, stream_error=True):
    """A GOAWAY (or, for a stream error, a RST_STREAM) with one of `codes`, or the close (as
    h2spec accepts); silence is a failure."""
    kinds = (GOAWAY, RST_STREAM) if stream_error else (GOAWAY,)
    received = conn.wait_for(lambda f: f[0] in kinds)
    assert received is not None, "no error: the server ignored the frame"
    assert received == CLOSED or error_code(received) in codes, received


@pytest.fixture()
def conn(server):
    c = Connection(server.port)
    yield c
    c.close()


# Generic 2.2, 2.3: frames that are fine on a half-closed (remote) stream; the response (a 404
# with a body here) still arrives.
@pytest.mark.parametrize("extra", [frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 100)), frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 16))])
def test_window_update_and_priority_on_a_half_closed_stream_are_accepted(conn, extra):
    conn.send(conn.headers(1), extra)
    assert conn.wait_for(lambda f: f[0] == DATA and f[2] == 1) not in (None, CLOSED)
    assert conn.wait_for(lambda f: f[0] in (GOAWAY, RST_STREAM), seconds=0.5) is None


def test_data_on_a_half_closed_stream_is_stream_closed(conn):
    conn.send(conn.headers(1), frame(DATA, END_STREAM, 1, b"x"))
    expect_error(conn, {STREAM_CLOSED})


def test_data_and_headers_after_rst_stream_are_stream_closed(server):
    for late in ("data", "headers"):
        c = Connection(server.port)
        c.send(c.headers(1, end_stream=False, method="POST", path="/predict"), frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))
        c.send(frame(DATA, END_STREAM, 1, b"{}") if late == "data" else c.headers(1))
        expect_error(c, {STREAM_CLOSED})
        c.close()


def test_data_and_headers_on_a_closed_stream_are_stream_closed(server):
    for late in ("data", "headers"):
        c = Connection(server.port)
        c.send(c.headers(1))
        assert c.wait_for(lambda f: f[2] == 1 and f[1] & END_STREAM) not in (None, CLOSED)
        c.send(frame(DATA, END_STREAM, 1, b"x") if late == "data" else c.headers(1))
        expect_error(c, {STREAM_CLOSED}, stream_error=late == "data")
        c.close()


def test_a_smaller_stream_id_than_before_is_a_protocol_error(conn):
    conn.send(conn.headers(5))
    conn.send(conn.headers(3))
    expect_error(conn, {PROTOCOL_ERROR}, stream_error=False)


def test_streams_past_the_advertised_limit_are_refused(server):
    # A zero initial window keeps every response body (and so every stream) open.
    c = Connection(server.port, settings=struct.pack(">HI", 4, 0))
    limit = c.server_settings[3]
    c.send(*[c.headers(1 + 2 * i) for i in range(limit + 1)])
    expect_error(c, {PROTOCOL_ERROR, REFUSED_STREAM})
    c.close()


def test_priority_depending_on_itself_and_priority_on_stream_zero(server):
    c = Connection(server.port)
    c.send(frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 16)))
    expect_error(c, {PROTOCOL_ERROR})
    c.close()
    c = Connection(server.port)
    c.send(frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 16)))
    expect_error(c, {PROTOCOL_ERROR}, stream_error=False)
    c.close()


def test_a_rest_answer_given_at_once_still_follows_the_frames_before_it(conn):
    """A REST request answered at once, with a protocol error in the same read: the GOAWAY
    comes before the answer (the answer waits until the read is parsed)."""
    conn.send(conn.headers(5) + conn.headers(3))
    first = conn.wait_for(lambda f: f[0] in (GOAWAY, HEADERS))
    assert first not in (None, CLOSED) and first[0] == GOAWAY, first

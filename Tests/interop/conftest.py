"""Fixtures: the Swift test server (maas-interop) and a grpcio echo server, on loopback."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("MAAS_BIN_DIR", ROOT / ".build" / "debug"))


def binary(name):
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} not found: build first (swift build) or set MAAS_BIN_DIR")
    return str(path)


def stop_process(proc, timeout=10):
    """SIGTERM, then SIGKILL if it has not exited within `timeout` s; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class RunningProcess:
    def __init__(self, args, ready_prefix="listening on "):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith(ready_prefix):
            self.stop()
            raise RuntimeError(f"{args[0]} did not start: {line!r} {self.proc.stderr.read()}")
        self.port = int(line[len(ready_prefix):].strip())
        self.address = f"127.0.0.1:{self.port}"

    def stop(self, timeout=10):
        return stop_process(self.proc, timeout)


@pytest.fixture(scope="module")
def swift_server():
    """maas-interop serve: health + maas.testing.Echo, default limits (64 MiB messages)."""
    server = RunningProcess([binary("maas-interop"), "serve", "--port", "0"])
    yield server
    assert server.stop() == 0, "server did not exit cleanly on SIGTERM"


@pytest.fixture(scope="module")
def channel(swift_server):
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(swift_server.address, options=options) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="module")
def python_echo_server():
    server = RunningProcess([sys.executable, str(Path(__file__).with_name("echo_server.py"))])
    yield server
    server.stop()


def raw(channel, path, **kwargs):
    """A callable for `path` that sends and receives bytes (no protobuf)."""
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MaasServe:
    """`maas serve` (the built-in seed model unless told otherwise) on a free port, ready;
    stderr in a file."""

    def __init__(self, tmp_path, *args, stdout=subprocess.DEVNULL, port=None, name="stderr"):
        import tritonclient.grpc as grpcclient
        self.stderr_path = tmp_path / name
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen([binary("maas"), "serve", "--port", str(self.port), *map(str, args)],
                                         stdout=stdout, stderr=stderr, text=True)
        client = grpcclient.InferenceServerClient(self.address)
        if not wait_for(lambda: self.proc.poll() is None and server_ready(client), timeout=60):
            self.stop()
            raise RuntimeError(f"maas serve did not start: {self.stderr_path.read_text()}")

    def stop(self):
        return stop_process(self.proc)


def server_ready(client):
    from tritonclient.utils import InferenceServerException
    try:
        return client.is_server_ready()
    except InferenceServerException:
        return False


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()

"""Fixtures: the Swift test server (maas-interop) and a grpcio echo server, on loopback."""
import os
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


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()

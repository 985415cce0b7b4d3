"""Our own clients on a server with --auth-tokens: `maas models`, `maas infer` (gRPC, --http, and
several servers) and `maas health` send `authorization: Bearer` from --token-file or MAAS_TOKEN;
without a token they get the server's refusal; a token file that holds no token, or a token with
characters a bearer token cannot have, is refused before anything is sent."""
import os
import subprocess

import numpy as np
import pytest

from conftest import binary
from test_auth import OPS, READER, RUNNER, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = Server(tmp_path_factory.mktemp("auth-clients"), "--auth-health")
    yield process
    process.stop()


def maas(*args, token=None, env_token=None):
    env = {k: v for k, v in os.environ.items() if k != "MAAS_TOKEN"}
    if env_token is not None:
        env["MAAS_TOKEN"] = env_token
    return subprocess.run([binary("maas"), *map(str, args)], capture_output=True, text=True, timeout=60, env=env)


def write_token(tmp_path, token, name="token"):
    path = tmp_path / name
    path.write_text(token + "\n")
    return path


def test_models_with_and_without_a_token(server, tmp_path):
    listed = maas("models", "list", "--server", server.address, "--token-file", write_token(tmp_path, READER))
    assert listed.returncode == 0, listed.stderr
    assert "seed_mlp" in listed.stdout
    refused = maas("models", "list", "--server", server.address)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr or "unauthenticated" in refused.stderr.lower(), refused.stderr


@pytest.mark.parametrize("transport", ["grpc", "http", "two servers"])
def test_infer_with_the_token_from_the_environment(server, tmp_path, transport):
    x = np.random.default_rng(2).standard_normal((100, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    servers = {"two servers": f"{server.address},{server.address}"}.get(transport, server.address)
    extra = ["--http"] if transport == "http" else []
    args = ["infer", "--server", servers, "--model", "seed_mlp", "--input", f"input={tmp_path / 'x.npy'}",
            "--output-dir", tmp_path / f"out-{transport.replace(' ', '-')}", *extra]
    # maas infer reads the model's metadata first: it needs the read scope as well as infer.
    run = maas(*args, env_token=OPS)
    assert run.returncode == 0, run.stdout + run.stderr
    assert np.load(tmp_path / f"out-{transport.replace(' ', '-')}" / "output.npy").shape == (100, 10)
    # The reader may read the metadata but not run inference, the runner the other way round:
    # the scope is named.
    denied = maas(*args, env_token=READER)
    assert denied.returncode == 1
    assert "infer" in denied.stderr and ("PERMISSION_DENIED" in denied.stderr or "403" in denied.stderr), denied.stderr
    runner = maas(*args, env_token=RUNNER)
    assert runner.returncode == 1 and "'read'" in runner.stderr, runner.stderr


def test_health_with_a_token(server, tmp_path):
    port = server.address.split(":")[1]
    ok = maas("health", "--port", port, "--token-file", write_token(tmp_path, OPS))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = maas("health", "--port", port)
    assert refused.returncode != 0


@pytest.mark.parametrize("content, message", [
    ("\n", "holds no token"),
    ("two words\n", "letters, digits"),
])
def test_a_bad_token_file_is_refused_before_anything_is_sent(tmp_path, content, message):
    path = tmp_path / "bad"
    path.write_text(content)
    run = maas("models", "list", "--server", "127.0.0.1:1", "--token-file", path)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr

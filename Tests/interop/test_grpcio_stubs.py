"""Stubs generated from our proto/ by grpcio-tools, calling the model server directly: the
requests tritonclient never sends (typed contents, malformed sizes, both raw and typed).

Runs in its own pytest process (scripts/test): it defines package `inference` from proto/,
which clashes with tritonclient's copy in one process's descriptor pool."""
import importlib
import shutil
import sys

import grpc
import numpy as np
import pytest
from grpc_tools import protoc

from conftest import ROOT, RunningProcess, binary, wait_for

FIXTURES = ROOT / "Tests" / "MaaSComputeTests" / "Fixtures" / "onnx"


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}",
                        "inference/grpc_service.proto", "inference/model_config.proto"]) == 0
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("inference.grpc_service_pb2"), importlib.import_module("inference.grpc_service_pb2_grpc")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
def stub(stubs, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    (repo / "seed_mlp" / "1").mkdir(parents=True)
    shutil.copy(FIXTURES / "seed_mlp.torchscript.op17.onnx", repo / "seed_mlp" / "1" / "model.onnx")
    process = RunningProcess([binary("maas-interop"), "serve-models", "--port", "0", "--model-repository", str(repo)])
    pb, pb_grpc = stubs
    channel = grpc.insecure_channel(process.address)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    assert wait_for(lambda: stub.ServerReady(pb.ServerReadyRequest()).ready, timeout=30)
    yield pb, stub
    channel.close()
    assert process.stop() == 0


def request(pb, x=None, **kwargs):
    req = pb.ModelInferRequest(model_name="seed_mlp", id="r1")
    tensor = req.inputs.add(name="input", datatype=kwargs.get("datatype", "FP32"))
    shape = kwargs.get("shape", list(x.shape) if x is not None else [1, 10])
    tensor.shape.extend(shape)
    if "typed" in kwargs:
        tensor.contents.fp32_contents.extend(kwargs["typed"])
    if "raw" in kwargs:
        req.raw_input_contents.append(kwargs["raw"])
    return req


def test_raw_and_typed_inputs_agree(stub):
    pb, stub = stub
    x = np.random.default_rng(3).standard_normal((2, 10)).astype(np.float32)
    raw = stub.ModelInfer(request(pb, x, raw=x.tobytes()))
    typed = stub.ModelInfer(request(pb, x, typed=x.flatten().tolist()))
    assert raw.id == "r1" and raw.model_name == "seed_mlp" and raw.model_version == "1"
    assert raw.outputs[0].name == "output" and list(raw.outputs[0].shape) == [2, 10] and raw.outputs[0].datatype == "FP32"
    assert raw.raw_output_contents[0] == typed.raw_output_contents[0]
    assert len(raw.raw_output_contents[0]) == 2 * 10 * 4


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(raw=b"\0" * 39), "has 39 bytes of raw_input_contents, shape [1, 10] of FP32 needs 40"),
    (dict(raw=b"\0" * 40, typed=[0.0] * 10), "typed contents while raw_input_contents are also given"),
    (dict(typed=[0.0] * 9), "has 9 values in fp32_contents, shape [1, 10] needs 10"),
    (dict(shape=[-1, 10], raw=b""), "invalid dimension -1"),
    (dict(shape=[0, 10], raw=b""), "batch size 0, allowed 1...64"),
    (dict(shape=[2**31, 2**31], raw=b""), "invalid dimension"),
    (dict(), "has no data"),
])
def test_bad_requests_are_invalid_argument(stub, kwargs, fragment):
    pb, stub = stub
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request(pb, **kwargs))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    assert fragment in info.value.details(), info.value.details()


def test_repository_index_ready_filter(stub):
    pb, stub = stub
    models = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)).models
    assert [(m.name, m.version, m.state) for m in models] == [("seed_mlp", "1", "READY")]


def test_unserved_rpcs_are_unimplemented(stub):
    pb, stub = stub
    with pytest.raises(grpc.RpcError) as info:
        stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

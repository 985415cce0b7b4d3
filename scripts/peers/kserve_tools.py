"""Helpers for scripts/bench-serve: stubs generated from our proto/, request bodies for h2load,
and the reference peer (grpcio + onnxruntime implementing ModelInfer)."""
import importlib
import struct
import sys
import tempfile
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stubs():
    out = tempfile.mkdtemp()
    from grpc_tools import protoc
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}",
                        "inference/grpc_service.proto", "inference/model_config.proto"]) == 0
    sys.path.insert(0, out)
    return importlib.import_module("inference.grpc_service_pb2"), importlib.import_module("inference.grpc_service_pb2_grpc")


def write_request(path, model, width):
    """A gRPC-framed ModelInferRequest with one FP32 [1, width] input, for h2load -d."""
    import numpy as np
    pb, _ = stubs()
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input", datatype="FP32")
    tensor.shape.extend([1, width])
    request.raw_input_contents.append(np.random.default_rng(0).standard_normal((1, width)).astype(np.float32).tobytes())
    body = request.SerializeToString()
    Path(path).write_bytes(struct.pack(">BI", 0, len(body)) + body)


def write_rest_request(path, width):
    """A KServe REST infer body with Triton's binary extension (JSON header, then one FP32 [1, width]
    tensor), for h2load --h1 -d; prints the header's length for Inference-Header-Content-Length."""
    import json
    import numpy as np
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, width], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 4 * width}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    data = np.random.default_rng(0).standard_normal((1, width)).astype(np.float32).tobytes()
    Path(path).write_bytes(header + data)
    print(len(header))


def serve_peer(port, models, intra_threads=1, workers=8):
    """ModelInfer with onnxruntime, one session per model name, each request run alone as it
    comes on one of `workers` handler threads; `intra_threads` onnxruntime threads per run (0: its
    default, one per core)."""
    import grpc
    import numpy as np
    import onnxruntime as ort
    pb, pb_grpc = stubs()
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    sessions = {name: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]) for name, path in models.items()}

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        def ServerReady(self, request, context):
            return pb.ServerReadyResponse(ready=True)

        def ModelInfer(self, request, context):
            session = sessions[request.model_name]
            feeds = {}
            for index, tensor in enumerate(request.inputs):
                dtype = {"FP32": np.float32, "INT64": np.int64, "INT32": np.int32}[tensor.datatype]
                feeds[tensor.name] = np.frombuffer(request.raw_input_contents[index], dtype=dtype).reshape(tensor.shape)
            response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
            for meta, value in zip(session.get_outputs(), session.run(None, feeds)):
                out = response.outputs.add(name=meta.name, datatype="FP32")
                out.shape.extend(value.shape)
                response.raw_output_contents.append(value.tobytes())
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def batch_size(port, model):
    """Average rows per batch the server ran for `model` (ModelStatistics)."""
    import grpc
    pb, pb_grpc = stubs()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats[0]
    return stats.inference_count / max(stats.execution_count, 1)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "request":
        write_request(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif command == "rest-request":
        write_rest_request(sys.argv[2], int(sys.argv[3]))
    elif command == "peer":
        import os
        serve_peer(int(sys.argv[2]), dict(arg.split("=", 1) for arg in sys.argv[3:]),
                   intra_threads=int(os.environ.get("PEER_INTRA_THREADS", "1")), workers=int(os.environ.get("PEER_WORKERS", "8")))
    elif command == "batch-size":
        print(f"{batch_size(int(sys.argv[2]), sys.argv[3]):.1f}")

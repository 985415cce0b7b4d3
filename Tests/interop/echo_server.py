"""maas.testing.Echo and grpc.health.v1.Health written with grpcio, for our Swift client to
call. Same contract as Sources/MaaSTestSupport/EchoService.swift. Prints 'listening on PORT'."""
import sys
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def echoed(context):
    return tuple((k, v) for k, v in context.invocation_metadata() if k.startswith("x-echo-"))


def meta(context, key, default=None):
    for k, v in context.invocation_metadata():
        if k == key:
            return v
    return default


def unary(request, context):
    context.set_trailing_metadata(echoed(context))
    return request


def slow(request, context):
    deadline = time.monotonic() + int(meta(context, "x-sleep-ms", "5000")) / 1000
    while time.monotonic() < deadline and context.is_active():
        time.sleep(0.01)
    return request


def server_stream(request, context):
    for _ in range(int(meta(context, "x-count", "3"))):
        yield request
    context.set_trailing_metadata(echoed(context))


def client_stream(requests, context):
    return b"".join(requests)


def bidi(requests, context):
    context.send_initial_metadata(echoed(context))
    for request in requests:
        yield request


def fail(request, context):
    code = int(meta(context, "x-code", "2"))
    status = next(s for s in grpc.StatusCode if s.value[0] == code)
    context.set_trailing_metadata(echoed(context))
    binary = meta(context, "x-message-bin")
    context.abort(status, binary.decode() if binary is not None else meta(context, "x-message", "failed on request"))


def main():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("maas.testing.Echo", handlers),))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0")
    server.start()
    print(f"listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()

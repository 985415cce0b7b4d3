"""Our server with grpcio clients, and our Swift client with a grpcio server."""
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import binary, raw, wait_for

ECHO = "/maas.testing.Echo/"
HCR = health_pb2.HealthCheckResponse


def test_health_check_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == HCR.SERVING
    reply = stub.Check(health_pb2.HealthCheckRequest(service="maas.testing.Echo"), timeout=5)
    assert reply.status == HCR.SERVING


def test_health_check_unknown_service_is_not_found(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no.such.Service" in info.value.details()


def test_health_watch_receives_status_changes(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    control = raw(channel, "/maas.testing.HealthControl/Set")
    control(b"watched.Service=1", timeout=5)
    received = []
    stream = stub.Watch(health_pb2.HealthCheckRequest(service="watched.Service"), timeout=10)

    def read():
        try:
            for reply in stream:
                received.append(reply.status)
        except grpc.RpcError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    assert wait_for(lambda: received == [HCR.SERVING])
    control(b"watched.Service=2", timeout=5)
    assert wait_for(lambda: received == [HCR.SERVING, HCR.NOT_SERVING])
    control(b"watched.Service=0", timeout=5)
    assert wait_for(lambda: received == [HCR.SERVING, HCR.NOT_SERVING, HCR.SERVICE_UNKNOWN])
    stream.cancel()
    reader.join(5)


def test_health_watch_unknown_service_streams_service_unknown(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    stream = stub.Watch(health_pb2.HealthCheckRequest(service="later.Service"), timeout=10)
    assert next(stream).status == HCR.SERVICE_UNKNOWN
    raw(channel, "/maas.testing.HealthControl/Set")(b"later.Service=1", timeout=5)
    assert next(stream).status == HCR.SERVING
    stream.cancel()


def test_malformed_protobuf_is_internal(channel):
    with pytest.raises(grpc.RpcError) as info:
        raw(channel, "/grpc.health.v1.Health/Check")(b"\x0a\xff\xff\xff", timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "grpc.health.v1.HealthCheckRequest" in info.value.details()


def test_100_concurrent_calls_on_one_channel(channel):
    echo = raw(channel, ECHO + "Unary")
    futures = [echo.future(f"call-{i}".encode(), timeout=30) for i in range(100)]
    assert [f.result() for f in futures] == [f"call-{i}".encode() for i in range(100)]


def test_50_mib_round_trip(channel):
    payload = bytes(range(256)) * (50 * 1024 * 1024 // 256)
    assert raw(channel, ECHO + "Unary")(payload, timeout=120) == payload


def test_over_limit_message_is_resource_exhausted(channel):
    payload = b"\0" * (64 * 1024 * 1024 + 1)
    with pytest.raises(grpc.RpcError) as info:
        raw(channel, ECHO + "Unary")(payload, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "67108865" in info.value.details() and "67108864" in info.value.details()
    # The connection and server carry on.
    assert raw(channel, ECHO + "Unary")(b"after", timeout=5) == b"after"


def test_1ms_deadline_on_slow_call(channel):
    with pytest.raises(grpc.RpcError) as info:
        raw(channel, ECHO + "Slow")(b"x", timeout=0.001, metadata=(("x-sleep-ms", "2000"),))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_all_call_shapes_and_metadata(channel):
    reply, call = raw(channel, ECHO + "Unary").with_call(
        b"hi", timeout=5, metadata=(("x-echo-a", "1"), ("x-echo-b-bin", b"\x00\xff")))
    assert reply == b"hi"
    assert ("x-echo-a", "1") in call.trailing_metadata()
    assert ("x-echo-b-bin", b"\x00\xff") in call.trailing_metadata()

    stream = channel.unary_stream(ECHO + "ServerStream")
    assert list(stream(b"s", timeout=5, metadata=(("x-count", "4"),))) == [b"s"] * 4

    client_stream = channel.stream_unary(ECHO + "ClientStream")
    assert client_stream(iter([b"a", b"b", b"c"]), timeout=5) == b"abc"

    bidi = channel.stream_stream(ECHO + "Bidi")
    assert list(bidi(iter([b"1", b"2", b"3"]), timeout=5)) == [b"1", b"2", b"3"]


def test_error_status_and_message(channel):
    message = "100% wrong: caf\u00e9 \u2717\nsecond line"
    with pytest.raises(grpc.RpcError) as info:
        raw(channel, ECHO + "Fail")(b"", timeout=5, metadata=(("x-code", "9"), ("x-message", "ignored")))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "ignored"
    # Non-ASCII and '%' travel percent-encoded in grpc-message; grpcio decodes them.
    with pytest.raises(grpc.RpcError) as info:
        raw(channel, ECHO + "Fail")(b"", timeout=5, metadata=(("x-code", "3"), ("x-message-bin", message.encode())))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == message


def test_unknown_method_and_service_are_unimplemented(channel):
    for path in (ECHO + "Nope", "/no.such.Service/Method"):
        with pytest.raises(grpc.RpcError) as info:
            raw(channel, path)(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_swift_client_against_grpcio_server(python_echo_server):
    result = subprocess.run(
        [binary("maas-interop"), "client", "--port", str(python_echo_server.port)],
        capture_output=True, text=True, timeout=120)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


def test_swift_health_command_against_grpcio_server(python_echo_server):
    result = subprocess.run(
        [binary("maas"), "health", "--port", str(python_echo_server.port)],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "SERVING", result.stdout + result.stderr

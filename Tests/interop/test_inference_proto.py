"""proto/inference against tritonclient 2.73's descriptors: every message, field, enum value and
RPC we declare has Triton's name, number and type."""
from tritonclient.grpc import model_config_pb2, service_pb2

from proto_compare import compare_message, compile_file, reference_message


def test_grpc_service_proto_matches_triton(tmp_path):
    files = compile_file(tmp_path, "inference/grpc_service.proto")
    ours = files["inference/grpc_service.proto"]
    assert ours.package == "inference"
    declared = {m.name for m in ours.message_type}
    # All of Triton's service messages are declared, so generated stubs see the whole service.
    assert declared == set(service_pb2.DESCRIPTOR.message_types_by_name)
    for message in ours.message_type:
        compare_message(message, reference_message(service_pb2, message.name), message.name)
    service = ours.service[0]
    reference = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.name == "GRPCInferenceService"
    assert [m.name for m in service.method] == [m.name for m in reference.methods]
    for method in service.method:
        ref = reference.methods_by_name[method.name]
        assert method.input_type.split(".")[-1] == ref.input_type.name
        assert method.output_type.split(".")[-1] == ref.output_type.name
        assert method.client_streaming == ref.client_streaming and method.server_streaming == ref.server_streaming


def test_model_config_proto_matches_triton(tmp_path):
    ours = compile_file(tmp_path, "inference/model_config.proto")["inference/model_config.proto"]
    ref_enum = {v.name: v.number for v in model_config_pb2.DataType.DESCRIPTOR.values}
    assert {v.name: v.number for v in ours.enum_type[0].value} == ref_enum
    for message in ours.message_type:
        compare_message(message, reference_message(model_config_pb2, message.name), message.name)
    config = next(m for m in ours.message_type if m.name == "ModelConfig")
    for name in ("name", "platform", "max_batch_size", "input", "output", "dynamic_batching", "version_policy"):
        assert any(f.name == name for f in config.field), name

"""Compares the messages we declare in proto/ with a reference package's descriptors."""
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from conftest import ROOT


def compile_file(tmp_path, relative):
    """Our .proto file (and its imports) as FileDescriptorProtos, by name."""
    out = tmp_path / "set.desc"
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", "--include_imports", f"--descriptor_set_out={out}", relative]) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in files.file}


def reference_message(module, name):
    proto = descriptor_pb2.DescriptorProto()
    module.DESCRIPTOR.message_types_by_name[name].CopyToProto(proto)
    return proto


def compare_message(ours, ref, path):
    """Every field we declare exists in the reference with the same number, type, label and
    message/enum type name; every enum value we declare has the same number."""
    ref_fields = {f.name: f for f in ref.field}
    for field in ours.field:
        assert field.name in ref_fields, f"{path}.{field.name} is not in the reference"
        r = ref_fields[field.name]
        assert field.number == r.number, f"{path}.{field.name}: number {field.number} vs {r.number}"
        assert field.type == r.type, f"{path}.{field.name}: type {field.type} vs {r.type}"
        assert (field.label == 3) == (r.label == 3), f"{path}.{field.name}: repeated differs"
        assert field.type_name.split(".")[-1] == r.type_name.split(".")[-1], f"{path}.{field.name}: {field.type_name} vs {r.type_name}"
        assert field.HasField("oneof_index") == r.HasField("oneof_index"), f"{path}.{field.name}: oneof membership differs"
    ref_enums = {e.name: {v.name: v.number for v in e.value} for e in ref.enum_type}
    for enum in ours.enum_type:
        for value in enum.value:
            assert ref_enums[enum.name][value.name] == value.number, f"{path}.{enum.name}.{value.name}"
    ref_nested = {n.name: n for n in ref.nested_type}
    for nested in ours.nested_type:
        assert nested.name in ref_nested, f"{path}.{nested.name} is not in the reference"
        compare_message(nested, ref_nested[nested.name], f"{path}.{nested.name}")

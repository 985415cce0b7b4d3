"""Writes the seed corpus of the onnx fuzz harness (Tests/Fuzz/corpus/onnx): every small graph of
Tests/interop/onnx_cases.py (one per operator edge case, as the engine tests run them) and the
small exported fixtures of Tests/MaaSComputeTests/Fixtures/onnx. Files over MAX_BYTES are left out
so that the committed corpus stays small and within the harness's -max_len.

Run with the interop venv (it has the onnx package): .venv/bin/python Tests/Fuzz/make_onnx_corpus.py
"""
import os
import re
import shutil
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
sys.path.insert(0, os.path.join(root, "Tests", "interop"))
import onnx_cases  # noqa: E402

MAX_BYTES = 8192
FIXTURES = ["seed_mlp.torchscript.op17", "seed_mlp.dynamo.op18", "sk_mlpclassifier_nozipmap.skl2onnx.op17",
            "sk_mlpregressor.skl2onnx.op17", "mlp3d.torchscript.op17", "seed_default"]


def main():
    out = os.path.join(here, "corpus", "onnx")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.startswith("case-") or name.startswith("fixture-"):
            os.remove(os.path.join(out, name))
    cases = {}
    for make in (onnx_cases.cases, onnx_cases.transformer_op_cases, onnx_cases.fused_cases):
        cases.update(make())
    written = 0
    for name, (model, _) in sorted(cases.items()):
        data = model.SerializeToString()
        if len(data) > MAX_BYTES:
            continue
        with open(os.path.join(out, "case-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") + ".onnx"), "wb") as f:
            f.write(data)
        written += len(data)
    for fixture in FIXTURES:
        source = os.path.join(root, "Tests", "MaaSComputeTests", "Fixtures", "onnx", fixture + ".onnx")
        shutil.copyfile(source, os.path.join(out, "fixture-" + fixture + ".onnx"))
        written += os.path.getsize(source)
    print(f"{out}: {written} bytes")


if __name__ == "__main__":
    main()

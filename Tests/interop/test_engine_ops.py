"""Each operator edge case through `maas run`, compared with onnxruntime on the same model."""
import os
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import binary
from onnx_cases import cases

CASES = cases()


KERNEL_VARIANTS = {
    "default": {},
    "avx2": {"MAAS_NO_AVX512": "1"},
    "openblas": {"MAAS_NO_SMALL_GEMM": "1"},
}


def run_maas(model_path, feeds, out_dir, env=None):
    args = [binary("maas"), "run", str(model_path), "--output-dir", str(out_dir)]
    for name, value in feeds.items():
        path = out_dir.parent / f"{name}.npy"
        np.save(path, value)
        args += ["--input", f"{name}={path}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


# GEMM-based ops also run through the AVX2-only kernels and the OpenBLAS path, which machines
# without AVX-512 (or without AVX2) take.
PARAMS = [(name, "default") for name in sorted(CASES)] + [
    (name, variant) for name in sorted(CASES) if name.startswith(("Gemm", "MatMul", "Conv"))
    for variant in ("avx2", "openblas")]


@pytest.mark.parametrize("name,variant", PARAMS)
def test_operator_matches_onnxruntime(name, variant, tmp_path):
    model, feeds = CASES[name]
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    result = run_maas(path, feeds, tmp_path / "out", KERNEL_VARIANTS[variant])
    assert result.returncode == 0, result.stderr
    for output, reference in expected.items():
        ours = np.load(tmp_path / "out" / f"{output}.npy")
        assert ours.dtype == reference.dtype, (output, ours.dtype, reference.dtype)
        assert ours.shape == reference.shape, (output, ours.shape, reference.shape)
        if reference.dtype.kind in "iub":
            np.testing.assert_array_equal(ours, reference)
        else:
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)

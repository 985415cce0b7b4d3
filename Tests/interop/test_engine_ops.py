"""Each operator edge case through `maas run`, compared with onnxruntime on the same model, in
every kernel mode this CPU has (see tolerance.py for the bounds and kernel_modes.py for the modes)."""
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import binary
from kernel_modes import KERNEL_MODES, kernel_mode_env
from onnx_cases import cases, fused_cases, transformer_op_cases
from tolerance import Comparison

CASES = cases()
# Ops outside GEMM and convolution run the same code in every kernel mode: the default mode only.
TRANSFORMER_CASES = {**transformer_op_cases(), **fused_cases()}


def run_maas(model_path, feeds, out_dir, env, *flags):
    args = [binary("maas"), "run", str(model_path), "--output-dir", str(out_dir), *flags]
    for name, value in feeds.items():
        path = out_dir.parent / f"{name}.npy"
        np.save(path, value)
        args += ["--input", f"{name}={path}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("mode", sorted(KERNEL_MODES))
@pytest.mark.parametrize("name", sorted(CASES))
def test_operator_matches_onnxruntime(name, mode, tmp_path):
    env = kernel_mode_env(mode)
    model, feeds = CASES[name]
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    result = run_maas(path, feeds, tmp_path / "out", env)
    assert result.returncode == 0, result.stderr
    comparison = Comparison(model, feeds)
    for output, reference in expected.items():
        comparison.check(output, np.load(tmp_path / "out" / f"{output}.npy"), reference)


def test_run_verbose_shows_each_choice_and_the_forcing_variable(tmp_path):
    model, feeds = CASES["Gemm_m64_k96_n80_trans_b1_beta0.5_c_shape(80,)"]
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    env = {k: v for k, v in kernel_mode_env("tuned").items() if k not in ("MAAS_KERNEL", "MAAS_CONV")}

    def gemm_line(extra):
        result = run_maas(path, feeds, tmp_path / "out", {**env, **extra}, "--verbose")
        assert result.returncode == 0, result.stderr
        return next(line for line in result.stdout.splitlines() if line.strip().startswith("kernel Gemm"))

    # Weights packed for our panel kernels (the only copy) leave nothing to time; packed for
    # OpenBLAS (no panel kernels), its row and column tilings are timed.
    flags = set(open("/proc/cpuinfo").read().split())
    if {"avx2", "fma"} <= flags:
        assert "panels (only one applies)" in gemm_line({}), gemm_line({})
    line = gemm_line({"MAAS_NO_SMALL_GEMM": "1"})
    assert "fastest when timed" in line and "blas-rows" in line and "blas-columns" in line and "µs" in line, line
    forced = run_maas(path, feeds, tmp_path / "out", {**env, "MAAS_KERNEL": "nonsense,blas-columns"}, "--verbose")
    assert "blas-columns (forced by MAAS_KERNEL)" in forced.stdout, forced.stdout


@pytest.mark.parametrize("name", sorted(TRANSFORMER_CASES))
def test_transformer_operator_matches_onnxruntime(name, tmp_path):
    model, feeds = TRANSFORMER_CASES[name]
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    result = run_maas(path, feeds, tmp_path / "out", kernel_mode_env("tuned"))
    assert result.returncode == 0, result.stderr
    comparison = Comparison(model, feeds)
    for output, reference in expected.items():
        actual = np.load(tmp_path / "out" / f"{output}.npy")
        assert actual.dtype == reference.dtype, f"{output}: {actual.dtype} vs onnxruntime's {reference.dtype}"
        comparison.check(output, actual, reference)

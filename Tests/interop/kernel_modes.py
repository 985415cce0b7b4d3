"""The engine's GEMM/conv kernel modes, and whether this CPU can run each."""
import os

import pytest


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


FLAGS = cpu_flags()

# mode -> (environment for maas, CPU flags it needs). Each mode forces its implementations
# (first that applies) so that every kernel runs in some mode whatever the timing would pick;
# "tuned" lets each plan time them, as a server does.
OURS = {"MAAS_KERNEL": "panels,blas-rows", "MAAS_CONV": "direct,im2col"}
KERNEL_MODES = {
    "avx512": (OURS, {"avx512f"}),
    "avx2": ({**OURS, "MAAS_NO_AVX512": "1"}, {"avx2", "fma"}),
    "openblas-rows": ({"MAAS_NO_SMALL_GEMM": "1", "MAAS_KERNEL": "blas-rows", "MAAS_CONV": "im2col-blas"}, set()),
    "openblas-columns": ({"MAAS_KERNEL": "blas-columns,blas-rows", "MAAS_CONV": "im2col-blas"}, set()),
    "tuned": ({}, set()),
}


def kernel_mode_env(mode):
    """The environment for `mode`, or a skip naming the CPU flags this machine lacks."""
    env, needs = KERNEL_MODES[mode]
    missing = needs - FLAGS
    if missing:
        pytest.skip(f"kernel mode {mode} needs CPU flags {sorted(missing)}, which this CPU lacks")
    return {**os.environ, **env}

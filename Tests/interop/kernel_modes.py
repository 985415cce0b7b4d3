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

# mode -> (environment for maas, CPU flags it needs)
KERNEL_MODES = {
    "avx512": ({}, {"avx512f"}),
    "avx2": ({"MAAS_NO_AVX512": "1"}, {"avx2", "fma"}),
    "openblas": ({"MAAS_NO_SMALL_GEMM": "1"}, set()),
}


def kernel_mode_env(mode):
    """The environment for `mode`, or a skip naming the CPU flags this machine lacks."""
    env, needs = KERNEL_MODES[mode]
    missing = needs - FLAGS
    if missing:
        pytest.skip(f"kernel mode {mode} needs CPU flags {sorted(missing)}, which this CPU lacks")
    return {**os.environ, **env}

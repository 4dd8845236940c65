"""XLA:CPU options the project's entry points set for themselves (`experiments/run.py`,
`bench_train.py`); never at ``import scion_jax``, which leaves a host program's XLA alone.

XLA:CPU hands reductions to YNNPACK's fusions by default; there they ran at ≈ 0.3 G
elements/s, and the model's norms-everywhere make many of them. Kept in XLA's own loop
fusions, the train step took 0.83 / 0.92 / 0.95× the time at d 64 / 128 / 256 on the
Intel AVX-512 + AMX kind (experiments/benchmarks/README.md). Library users may call
`set_flags()` themselves before their first JAX computation.
"""

from __future__ import annotations

import importlib.metadata
import os

# (option, value): XLA_FLAGS entries, each added unless the option is already there.
FLAGS = (("xla_cpu_experimental_ynn_fusion_type", "-reduce"),)
# XLA exits on an option it does not know, and these are experimental: set only on the
# jaxlib releases they were measured on.
TESTED_JAXLIB = ((0, 10),)


def jaxlib_release() -> tuple[int, int]:
    """(major, minor) of the installed jaxlib."""
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)


def set_flags() -> list[str]:
    """Adds `FLAGS` to the XLA_FLAGS environment variable, each unless the user set that
    option; returns the entries added. XLA reads XLA_FLAGS when JAX first starts a backend,
    so call this before the first computation. Adds nothing on an untested jaxlib."""
    if jaxlib_release() not in TESTED_JAXLIB:
        return []
    current = os.environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in FLAGS if f"--{name}=" not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added

"""XLA:CPU options the project's entry points set for themselves (`experiments/run.py`,
`bench_train.py`); never at ``import scion_jax``, which leaves a host program's XLA alone.

XLA:CPU hands reductions to YNNPACK's fusions by default; there they ran at ≈ 0.3 G
elements/s, and the model's norms-everywhere make many of them. Kept in XLA's own loop
fusions, the train step took 0.83 / 0.92 / 0.95× the time at d 64 / 128 / 256 on the
Intel AVX-512 + AMX kind (experiments/benchmarks/README.md). The entry points also split
the host into one device per core (`cpu_devices`), over which a single-process run is data
parallel. Library users may call `set_flags()` themselves before their first JAX computation.
"""

from __future__ import annotations

import importlib.metadata
import os

# (option, value): XLA_FLAGS entries, each added unless the option is already there.
FLAGS = (("xla_cpu_experimental_ynn_fusion_type", "-reduce"),)
# The host platform's number of devices (a stable option: set on every jaxlib).
DEVICE_COUNT = "xla_force_host_platform_device_count"
# XLA exits on an option it does not know, and these are experimental: set only on the
# jaxlib releases they were measured on.
TESTED_JAXLIB = ((0, 10),)


def jaxlib_release() -> tuple[int, int]:
    """(major, minor) of the installed jaxlib."""
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)


def cpu_devices(batch_size: int, cores: int | None = None) -> int:
    """One CPU device per core (at most), as many as divide `batch_size` sequences.

    Data parallelism over the cores pays on XLA:CPU: the small train step's many short
    kernels leave one device's two threads idle ≈ 37% of the step, and two devices fill
    those gaps (2-core Intel AVX-512 + AMX: 0.85 / 0.89 / 0.92× the one-device step time at
    d 64 / 128 / 256; experiments/benchmarks/README.md)."""
    if cores is None:  # the cores this process may use (no affinity API on macOS)
        affinity = getattr(os, "sched_getaffinity", None)
        cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    return max(n for n in range(1, min(cores, batch_size) + 1) if batch_size % n == 0)


def set_flags(cpu_devices: int = 1) -> list[str]:
    """Adds `FLAGS` to the XLA_FLAGS environment variable, each unless the user set that
    option, and with `cpu_devices` > 1 the host platform's device count (unless set);
    returns the entries added. XLA reads XLA_FLAGS when JAX first starts a backend, so call
    this before the first computation. Adds none of `FLAGS` on an untested jaxlib."""
    current = os.environ.get("XLA_FLAGS", "")
    options = [(DEVICE_COUNT, cpu_devices)] if cpu_devices > 1 else []
    if jaxlib_release() in TESTED_JAXLIB:
        options += FLAGS
    added = [f"--{name}={value}" for name, value in options if f"--{name}=" not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added

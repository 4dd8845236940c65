"""XLA:CPU options the project's entry points set for themselves (`experiments/run.py`,
`bench_train.py`); never at ``import scion_jax``, which leaves a host program's XLA alone.

XLA:CPU hands reductions to YNNPACK's fusions by default; there they ran at ≈ 0.3 G
elements/s, and the model's norms-everywhere make many of them. Kept in XLA's own loop
fusions, the train step took 0.83 / 0.92 / 0.95× the time at d 64 / 128 / 256 on the
Intel AVX-512 + AMX kind (experiments/benchmarks/README.md). The entry points also split
the host into one device per core, up to two (`cpu_devices`), over which a single-process
run is data parallel. Library users may call `set_flags()` themselves before their first
JAX computation.
"""

from __future__ import annotations

import importlib.metadata
import os

# (option, value): XLA_FLAGS entries, each added unless the option is already there.
FLAGS = (("xla_cpu_experimental_ynn_fusion_type", "-reduce"),)
# The host platform's number of devices, and what goes with more than one: XLA:CPU's
# concurrency-optimized scheduler may run independent collectives at once and deadlock
# (`scion_jax.partitioned`); scheduling only, and no slower with 2 devices (1.18 / 1.21 /
# 1.22× PyTorch at d 64 / 128 / 256 with it off, 1.07–1.28× with it on).
DEVICE_COUNT = "xla_force_host_platform_device_count"
MULTI_DEVICE_FLAGS = (("xla_cpu_enable_concurrency_optimized_scheduler", "false"),)
MAX_CPU_DEVICES = 2
# XLA exits on an option it does not know, and these are experimental: set only on the
# jaxlib releases they were measured on.
TESTED_JAXLIB = ((0, 10),)


def jaxlib_release() -> tuple[int, int]:
    """(major, minor) of the installed jaxlib."""
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)


def cpu_devices(batch_size: int, cores: int | None = None) -> int:
    """CPU devices for a data-parallel step: one per logical CPU this process may use, at
    most `MAX_CPU_DEVICES`, as many as divide `batch_size` sequences (1 if none do).

    Data parallelism over the cores pays on XLA:CPU: the small train step's many short
    kernels leave one device's two threads idle ≈ 37% of the step, and two devices fill
    those gaps (2-core Intel AVX-512 + AMX: 0.85 / 0.89 / 0.92× the one-device step time at
    d 64 / 128 / 256; experiments/benchmarks/README.md). Each device holds its own copy of
    the parameters and optimizer state, and more than two were never measured: hence the cap.
    """
    if cores is None:  # no affinity API on macOS
        affinity = getattr(os, "sched_getaffinity", None)
        cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    top = min(cores, MAX_CPU_DEVICES, batch_size)
    return max((n for n in range(1, top + 1) if batch_size % n == 0), default=1)


def set_flags(devices: int = 1) -> list[str]:
    """Adds `FLAGS` to the XLA_FLAGS environment variable, each unless the user set that
    option, and with `devices` > 1 `MULTI_DEVICE_FLAGS` for that many host devices; returns
    the entries added. XLA reads XLA_FLAGS when JAX first starts a backend, so call this
    before the first computation. Adds nothing on an untested jaxlib."""
    if jaxlib_release() not in TESTED_JAXLIB:
        return []
    current = os.environ.get("XLA_FLAGS", "")
    options = list(FLAGS)
    if devices > 1 and f"--{DEVICE_COUNT}=" not in current:
        options += [(DEVICE_COUNT, devices), *MULTI_DEVICE_FLAGS]
    added = [f"--{name}={value}" for name, value in options if f"--{name}=" not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added

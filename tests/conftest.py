"""Every test sees 8 fake CPU devices (set before jax is imported), and one persistent
compilation cache shared by the test processes and the runs and notebook kernels they
start: most tests compile the same small models, and a cache hit skips XLA entirely."""

import os

# The concurrency-optimized scheduler lets XLA:CPU run independent collectives at once
# on its thread pool; with 8 fake devices on 2 cores that deadlocks now and then
# (seen with partitioned norms under Auto axes). Scheduling only: results are unchanged.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
    + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keyed by the program, jax version and flags: a hit is the executable a compile would give.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

"""Every test sees 8 fake CPU devices (set before jax is imported)."""

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

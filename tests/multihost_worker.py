"""One process of a multi-host run on 127.0.0.1: 4 fake CPU devices each, gloo collectives.

Usage (see tests/test_multihost.py):
    python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz [TASK]

Every process joins `jax.distributed` at 127.0.0.1:PORT, builds a (2, 4) mesh over all
devices of all processes and runs TASK; process 0 writes the (gathered) result to
OUT.npz. TASK "scion_step": one partitioned Scion update of `make_grads()` with mixed
FSDP / tensor / stacked shardings. Other tasks (e.g. a training step) can be added to
`TASKS` and reuse the same launcher.
"""

from __future__ import annotations

import os
import sys

import numpy as np

DEVICES_PER_PROCESS = 4


def rules():
    """The rule table (imported late: jax must not start before `jax.distributed`)."""
    from scion_jax import Role

    return [
        ("^stack$", Role("rms_to_rms", batch_axes=0)),  # a stack of 4 matrices
        ("unembed", "rms_to_inf"),  # before "embed", which it contains
        ("embed", "l1_to_rms"),
        ("bias", "bias_rms"),
        (".*", "rms_to_rms"),
    ]


# PartitionSpec entries per parameter on the ("fsdp", "tensor") mesh.
SPECS = {
    "w0": ("fsdp", None), "w1": ("fsdp", None), "w2": ("fsdp", None),
    "mid0": (None, "tensor"), "mid1": ("fsdp", "tensor"),
    "stack": ("fsdp", None, None), "embed": ("fsdp", None), "unembed": (None, "tensor"),
    "bias": (None,),
}


def make_grads(seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic gradients (short sides ≥ 64, see tests/test_partitioned.py)."""
    rng = np.random.default_rng(seed)
    shapes = {"w0": (64, 96), "w1": (64, 96), "w2": (64, 96), "mid0": (64, 128),
              "mid1": (64, 128), "stack": (4, 64, 96), "embed": (128, 64),
              "unembed": (64, 128), "bias": (64,)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def scion_step(mesh) -> dict[str, np.ndarray]:
    """One partitioned Scion update (fp32 Newton–Schulz), gathered to every process."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import scion_jax

    grads = make_grads()
    shardings = {k: NamedSharding(mesh, P(*SPECS[k])) for k in grads}
    arrays = {
        k: jax.make_array_from_callback(v.shape, shardings[k], lambda idx, v=v: v[idx])
        for k, v in grads.items()
    }
    opt = scion_jax.scion(1.0, rules(), ns_dtype="float32", mesh=mesh)
    out = jax.jit(lambda g: opt.update(g, opt.init(g))[0])(arrays)
    for k in out:
        assert out[k].sharding.is_equivalent_to(shardings[k], grads[k].ndim), k
    replicated = jax.jit(lambda t: t, out_shardings=NamedSharding(mesh, P()))(out)
    return {k: np.asarray(v.addressable_data(0)) for k, v in replicated.items()}


TASKS = {"scion_step": scion_step}


def main(argv: list[str]) -> None:
    process_id, num_processes, port, out_path = int(argv[1]), int(argv[2]), argv[3], argv[4]
    task = argv[5] if len(argv) > 5 else "scion_step"
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"
        " --xla_cpu_enable_concurrency_optimized_scheduler=false"  # see conftest.py
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=60,
    )
    assert jax.device_count() == DEVICES_PER_PROCESS * num_processes, jax.devices()
    mesh = jax.make_mesh((2, jax.device_count() // 2), ("fsdp", "tensor"))
    result = TASKS[task](mesh)
    if process_id == 0:
        np.savez(out_path, **result)
    jax.distributed.shutdown()
    print(f"process {process_id}: ok", flush=True)


if __name__ == "__main__":
    main(sys.argv)

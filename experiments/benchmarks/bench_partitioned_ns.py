"""Partitioned vs GSPMD-only vs replicated Scion updates on 8 fake CPU devices.

For the paper's 69M proxy and 1.3B parameter shapes (PAPER.md §4), per device: FLOPs
(XLA cost analysis of the compiled update), bytes of collective results in the
compiled HLO, and (proxy only, it fits in memory) the CPU step time.

  partitioned  scion(..., mesh=mesh); params FSDP-sharded P('fsdp', None), Explicit axes
  gspmd        plain scion under jit; same FSDP shardings, Auto axes (GSPMD shards NS)
  replicated   plain scion; params replicated: every device orthogonalizes everything

Ideal per-device FLOPs = FLOPs of the unsharded update (one device) / 8.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
      .venv/bin/python experiments/benchmarks/bench_partitioned_ns.py [--steps 5] [--json out]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

if __name__ == "__main__":  # not when imported (gpu_check.py): the importer's devices stay
    os.environ.setdefault(
        "XLA_FLAGS",
        "--xla_force_host_platform_device_count=8"
        " --xla_cpu_enable_concurrency_optimized_scheduler=false",  # see tests/conftest.py
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_optimizer import llama_shapes  # noqa: E402  (same directory)
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import scion_jax  # noqa: E402
from scion_jax import hlo_stats  # noqa: E402
from scion_jax.newton_schulz import flops as ns_flops  # noqa: E402

VOCAB = 128_256
RULES = [
    ("unembed", "rms_to_inf"),  # before "embed", which it contains
    ("embed", "l1_to_rms"),
    (".*", "rms_to_rms"),
]


def swiglu_hidden(d: int) -> int:
    """8/3·d rounded up to a multiple of 64 (the proxy's 704 is given by the paper)."""
    return 64 * math.ceil(8 * d / 3 / 64)


def layers_for_total(d: int, hidden: int, total: float) -> int:
    per_layer = 4 * d * d + 3 * d * hidden
    return max(1, round((total - 2 * VOCAB * d) / per_layer))


def model_configs() -> dict[str, dict[str, tuple[int, ...]]]:
    proxy = llama_shapes(256, 4, 704, VOCAB)
    h = swiglu_hidden(3072)
    big = llama_shapes(3072, layers_for_total(3072, h, 1.3e9), h, VOCAB)
    return {"proxy-69M": proxy, "1.3B": big}


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """"a/b/c" keys to nested dicts (so rule regexes see the usual paths)."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def abstract_tree(shapes, sharding_for) -> Any:
    return nest({k: jax.ShapeDtypeStruct(s, jnp.float32, sharding=sharding_for(s))
                 for k, s in shapes.items()})


def update_fn(opt):
    return lambda g: opt.update(g, opt.init(g))[0]


def modes(devices: int):
    """(name, optimizer factory, sharding for a shape) per mode."""
    explicit = jax.make_mesh((devices,), ("fsdp",), axis_types=(AxisType.Explicit,))
    auto = jax.make_mesh((devices,), ("fsdp",), axis_types=(AxisType.Auto,))
    return {
        "partitioned": (lambda: scion_jax.scion(1.0, RULES, mesh=explicit),
                        lambda s: NamedSharding(explicit, P("fsdp", None))),
        "gspmd": (lambda: scion_jax.scion(1.0, RULES),
                  lambda s: NamedSharding(auto, P("fsdp", None))),
        "replicated": (lambda: scion_jax.scion(1.0, RULES),
                       lambda s: NamedSharding(auto, P())),
    }


def measure(shapes, steps: int, timed: bool) -> dict[str, Any]:
    n = jax.device_count()
    one = jax.jit(update_fn(scion_jax.scion(1.0, RULES)))
    total = hlo_stats.flops(one.lower(abstract_tree(shapes, lambda s: None)).compile())
    spectral = [s for k, s in shapes.items() if "embed" not in k]
    result: dict[str, Any] = {
        "params": int(sum(np.prod(s) for s in shapes.values())),
        "n_layers": sum(k.endswith("attn/q") for k in shapes),
        "ns_flops_analytic": sum(ns_flops(*s, 5) for s in spectral),
        "total_flops_one_device": total,
        "ideal_flops_per_device": total / n,
    }
    rng = np.random.default_rng(0)
    runs = {}
    for name, (make_opt, sharding_for) in modes(n).items():
        abstract = abstract_tree(shapes, sharding_for)
        out_sh = jax.tree.map(lambda a: a.sharding, abstract)
        fn = jax.jit(update_fn(make_opt()), out_shardings=out_sh)
        t0 = time.perf_counter()
        compiled = fn.lower(abstract).compile()
        stats = hlo_stats.summary(compiled)
        result[name] = {
            "flops_per_device": stats["flops"],
            "flops_vs_ideal": stats["flops"] / (total / n),
            "collective_bytes": stats["collective_bytes"],
            "collectives": stats["collectives"],
            "compile_s": time.perf_counter() - t0,
        }
        if timed:
            grads = jax.tree.map(
                lambda a: jax.device_put(
                    rng.standard_normal(a.shape, dtype=np.float32), a.sharding), abstract)
            jax.block_until_ready(compiled(grads))  # warm up
            runs[name] = (compiled, grads, [])
    # Interleaved rounds (one step of each mode per round): a busy machine slows
    # every mode alike, so the ratios survive noise that the absolute times do not.
    for _ in range(steps if timed else 0):
        for compiled, grads, times in runs.values():
            t = time.perf_counter()
            jax.block_until_ready(compiled(grads))
            times.append(time.perf_counter() - t)
    for name, (_, _, times) in runs.items():
        result[name]["step_ms"] = 1e3 * float(np.median(times))
    if timed:
        base = result["partitioned"]["step_ms"]
        for name in ("gspmd", "replicated"):
            result[name]["step_vs_partitioned"] = result[name]["step_ms"] / base
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--models", default="proxy-69M,1.3B")
    args = parser.parse_args()
    print(f"{jax.device_count()} devices: {jax.devices()[0].platform}")
    results = {}
    for model, shapes in model_configs().items():
        if model not in args.models.split(","):
            continue
        r = measure(shapes, args.steps, timed=model == "proxy-69M")
        results[model] = r
        print(f"\n{model}: {r['params'] / 1e6:.1f}M params, {r['n_layers']} layers, "
              f"ideal {r['ideal_flops_per_device'] / 1e9:.3f} GFLOP/device")
        for name in ("partitioned", "gspmd", "replicated"):
            row = r[name]
            step = (f", step {row['step_ms']:.1f} ms" if "step_ms" in row else "")
            print(f"  {name:12s} {row['flops_per_device'] / 1e9:9.3f} GFLOP/device "
                  f"({row['flops_vs_ideal']:.3f}x ideal), collectives "
                  f"{row['collective_bytes'] / 2**20:9.2f} MiB{step}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

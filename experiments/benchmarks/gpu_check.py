"""The parts of the one-call GPU check (`gpu_check.sh`), each writing one JSON file.

    python experiments/benchmarks/gpu_check.py --part=train --out=DIR [--cpu_smoke]

Parts (each in its own process, so that one part's crash, hang or memory does not touch
another's; `gpu_check.sh` caps each with `timeout`):

  env          jax / device versions, the device kind and its bf16 dense peak.
  train        proxy_69m's train step (`jit_train_step`, as `train` runs it) at the paper's
               context: tokens/s and MFU against the card's bf16 dense peak, with the config's
               attention ("blockwise") and with "xla" and "cudnn"; and attention alone
               (`jax.nn.dot_product_attention`, forward + backward), cuDNN vs XLA.
  memory       XLA's prediction of the step's bytes (`memory.step_memory`: the compiled
               step's memory_analysis) against the device's measured peak
               (`memory_stats()["peak_bytes_in_use"]`) after running that step.
  optimizer    one Scion update vs `optax.contrib.muon` at the proxy's and the 1.3B model's
               parameter shapes.
  partitioned  `scion(..., mesh=<the one device>)` (the trainer's partitioned path) vs plain
               `scion`: time and the largest difference of the updates.

`--cpu_smoke` runs every part at tiny sizes on the CPU (`make test` does, in
tests/test_gpu_check.py), so the GPU hour is not spent debugging this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_optimizer, memory

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from bench_optimizer import RULES, jitted_update, median_time, random_tree  # noqa: E402

PARTS = ("env", "train", "memory", "optimizer", "partitioned")
# bf16 dense peak FLOP/s (no sparsity) by device kind, the longest key that is a substring
# of the lower-case `device_kind`: NVIDIA's datasheets. None: not known here.
BF16_PEAKS = {
    "h200": 989e12,  # SXM
    "h200 nvl": None,  # not SXM's; its datasheet figure unchecked here
    "gh200": 989e12,
    "h100 pcie": 756e12,
    "h100 nvl": 835e12,
    "h100": 989e12,  # SXM
    "b200": 2250e12,
    "a100": 312e12,
    "l40s": 362e12,
    "l40": 181e12,
    "l4": 121e12,
    "a10": 125e12,
}


def bf16_peak(device_kind: str) -> float | None:
    """The bf16 dense peak FLOP/s of a device kind (None when not in `BF16_PEAKS`)."""
    kind = device_kind.lower()
    return BF16_PEAKS.get(max((key for key in BF16_PEAKS if key in kind), key=len, default=""))


def _peak(args) -> float | None:
    """The bf16 dense peak FLOP/s that MFU is taken against: --peak_tflops, else the card's."""
    return args.peak_tflops * 1e12 or bf16_peak(jax.devices()[0].device_kind)


def train_config(smoke: bool, attention: str | None = None, batch: int = 0):
    """proxy_69m at its context (4096) on one device, or a tiny model with `smoke`."""
    from scion_jax.train.config import paper_config

    c = paper_config("proxy_69m", None)
    c.mesh.update(data=1, fsdp=1, tensor=1)
    c.batch_size = batch or 16
    if smoke:
        c.seq_len, c.batch_size = 128, batch or 2
        c.model.update(d_model=64, n_layers=1, n_heads=1, n_kv_heads=0, vocab_size=512,
                       mlp_hidden=128,
                       attention_block=64)
    if attention:
        c.model.attention = attention
    return c


def _step_time(config, steps: int, peak: float | None) -> dict:
    from memory import train_setup  # experiments/benchmarks/memory.py

    from scion_jax.model import model_flops_per_token

    step, _, state, batch, cfg, _ = train_setup(config)
    start = time.perf_counter()
    state, metrics = step(state, batch)  # compile + first step
    loss = float(metrics["loss"])
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    t = float(np.median(times))
    tokens = config.batch_size * config.seq_len
    flops = model_flops_per_token(cfg, config.seq_len) * tokens
    return {
        "attention": config.model.attention,
        "batch": config.batch_size,
        "seq_len": config.seq_len,
        "step_s": t,
        "steps_timed": steps,
        "compile_and_first_step_s": compile_s,
        "tokens_per_s": tokens / t,
        "model_tflop_per_s": flops / t / 1e12,
        "mfu_bf16_peak": flops / t / peak if peak else None,
        "loss_step_1": loss,
    }


def _attention_alone(smoke: bool, repeats: int) -> dict:
    """Forward + backward of causal attention at the proxy's shapes, cuDNN vs XLA."""
    b, t, h, d = (2, 128, 1, 64) if smoke else (16, 4096, 4, 64)
    k = jax.random.split(jax.random.key(0), 3)
    q, kk, v = (jax.random.normal(key, (b, t, h, d), jnp.bfloat16) for key in k)
    out = {"shape": [b, t, h, d]}
    for impl in ("xla", "cudnn"):
        def loss(q, k, v, impl=impl):
            o = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
            return jnp.sum(o.astype(jnp.float32))

        try:
            fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
            out[f"{impl}_fwd_bwd_ms"] = median_time(fn, q, kk, v, repeats=repeats) * 1e3
        except Exception as e:  # cuDNN: GPUs only (and only some shapes / versions)
            out[f"{impl}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


def part_env(args) -> dict:
    device = jax.devices()[0]
    peak = _peak(args)
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": device.device_kind,
        "bf16_peak_tflop_per_s": peak / 1e12 if peak else None,
        "python": sys.version.split()[0],
    }


def part_train(args) -> dict:
    out = {"device_kind": jax.devices()[0].device_kind, "steps": {}, "errors": {}}
    deadline = time.monotonic() + args.budget_s
    peak = _peak(args)
    # The config's first; the smoke run skips "xla" (no GPU: the same program's compile).
    for attention in ("blockwise", "cudnn") if args.cpu_smoke else ("blockwise", "xla", "cudnn"):
        if time.monotonic() > deadline:
            out["errors"][attention] = "skipped: out of time"
            continue
        try:
            config = train_config(args.cpu_smoke, attention, args.batch)
            out["steps"][attention] = _step_time(config, args.steps, peak)
        except Exception as e:
            out["errors"][attention] = f"{type(e).__name__}: {str(e)[:300]}"
        _write(args, "train", out)  # what is done survives a timeout
    out["attention_alone"] = _attention_alone(args.cpu_smoke, args.steps)
    return out


def part_memory(args) -> dict:
    import memory  # experiments/benchmarks/memory.py

    config = train_config(args.cpu_smoke, batch=args.batch)
    predicted = memory.step_memory(config, config.batch_size)
    device = jax.devices()[0]
    step, _, state, batch, _, _ = memory.train_setup(config)
    for _ in range(2):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    stats = device.memory_stats()  # None on the CPU
    peak = stats.get("peak_bytes_in_use") if stats else None
    return {
        "device_kind": device.device_kind,
        "batch": config.batch_size,
        "seq_len": config.seq_len,
        "attention": config.model.attention,
        "predicted": predicted,
        "measured_peak_bytes": peak,
        "measured_over_predicted": peak / predicted["total_bytes"] if peak else None,
        "bytes_limit": stats.get("bytes_limit") if stats else None,
    }


def update_shapes(smoke: bool) -> dict[str, dict[str, tuple[int, int]]]:
    """bench_partitioned_ns.py's proxy and 1.3B shapes (the proxy's first), or tiny ones."""
    from bench_optimizer import llama_shapes
    from bench_partitioned_ns import model_configs

    return {"tiny": llama_shapes(64, 1, 192, 512)} if smoke else model_configs()


def part_optimizer(args) -> dict:
    import scion_jax

    out = {"device_kind": jax.devices()[0].device_kind}
    for name, shapes in update_shapes(args.cpu_smoke).items():
        params, grads = random_tree(shapes)
        row = {"params": int(sum(a * b for a, b in shapes.values()))}
        for opt, tx in (("scion", scion_jax.scion(0.01, RULES)),
                        ("muon", optax.contrib.muon(0.01))):
            update, update_args = jitted_update(tx, params, grads)
            row[f"{opt}_ms"] = median_time(update, *update_args, repeats=args.steps) * 1e3
        row["scion_over_muon"] = row["scion_ms"] / row["muon_ms"]
        out[name] = row
        del params, grads, update_args
        _write(args, "optimizer", out)
    return out


def part_partitioned(args) -> dict:
    import scion_jax

    shapes = next(iter(update_shapes(args.cpu_smoke).values()))  # the proxy's
    params, grads = random_tree(shapes)
    mesh = jax.make_mesh((1,), ("fsdp",), devices=jax.devices()[:1])
    out = {"device_kind": jax.devices()[0].device_kind, "matrices": len(shapes)}
    updates = {}
    for name, tx in (("plain", scion_jax.scion(0.01, RULES)),
                     ("partitioned", scion_jax.scion(0.01, RULES, mesh=mesh))):
        update, update_args = jitted_update(tx, params, grads)
        out[f"{name}_ms"] = median_time(update, *update_args, repeats=args.steps) * 1e3
        updates[name] = jax.tree.leaves(update(*update_args)[0])
    out["max_abs_difference"] = float(
        max(jnp.max(jnp.abs(x - y)) for x, y in zip(updates["plain"], updates["partitioned"]))
    )
    return out


def _write(args, part: str, result: dict) -> str:
    path = os.path.join(args.out, f"gpu_check_{part}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(path + ".tmp", path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=PARTS, required=True)
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    parser.add_argument("--cpu_smoke", action="store_true", help="Tiny sizes, on the CPU.")
    parser.add_argument("--steps", type=int, default=5, help="Timed calls (median).")
    parser.add_argument("--batch", type=int, default=0, help="Train batch (0: 16; smoke 2).")
    parser.add_argument("--peak_tflops", type=float, default=0, help="bf16 dense peak for "
                        "the MFU, TFLOP/s (0: the card's, BF16_PEAKS).")
    parser.add_argument("--budget_s", type=float, default=150, help="train: start no "
                        "variant after this many seconds.")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    try:
        result = globals()[f"part_{args.part}"](args)
        rc = 0
    except Exception:
        result, rc = {"error": traceback.format_exc()[-3000:]}, 1
    result["wall_s"] = time.perf_counter() - start
    print(_write(args, args.part, result))
    return rc


if __name__ == "__main__":
    sys.exit(main())

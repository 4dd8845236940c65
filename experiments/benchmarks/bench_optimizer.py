"""Scion update time vs optax.contrib.muon, optax.adamw and PyTorch Scion; NS FLOP/s.

    python experiments/benchmarks/bench_optimizer.py [--d_model=512 --n_layers=4 ...]

The tree is a small Llama (TARGETS.md: d 512, 4 layers, SwiGLU 1408, vocab 8192: 21.2M
params). All timings are medians over `--repeats` calls of the jitted update, taken in
one run so that ratios are comparable. The PyTorch baseline (a Scion step written with
the reference implementation's structure: Newton–Schulz in bf16 under torch.compile)
runs when torch is installed (`pip install -e .[bench]`).
"""

from __future__ import annotations

import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

import scion_jax
from scion_jax.newton_schulz import flops

FLAGS = flags.FLAGS
flags.DEFINE_integer("d_model", 512, "Model width.")
flags.DEFINE_integer("n_layers", 4, "Number of blocks.")
flags.DEFINE_integer("mlp_hidden", 1408, "SwiGLU hidden size.")
flags.DEFINE_integer("vocab", 8192, "Vocabulary size.")
flags.DEFINE_integer("repeats", 7, "Timed calls per measurement (median reported).")
flags.DEFINE_bool("torch", True, "Also time the PyTorch Scion baseline, if torch is installed.")
flags.DEFINE_bool("torch_child", False, "Internal: time only the PyTorch step and print it.")

RULES = [("embed", "l1_to_rms"), ("unembed", "rms_to_inf"), (".*", "rms_to_rms")]


def llama_shapes(d: int, layers: int, hidden: int, vocab: int) -> dict[str, tuple[int, int]]:
    """Flax-layout [d_in, d_out] shapes of a Llama tree (no norms: parameter-free)."""
    shapes = {"embed": (vocab, d), "unembed": (d, vocab)}
    for i in range(layers):
        for name in ("q", "k", "v", "o"):
            shapes[f"layers/{i}/attn/{name}"] = (d, d)
        shapes[f"layers/{i}/mlp/w1"] = (d, hidden)
        shapes[f"layers/{i}/mlp/w3"] = (d, hidden)
        shapes[f"layers/{i}/mlp/w2"] = (hidden, d)
    return shapes


def median_time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_optax(tx: optax.GradientTransformation, params, grads, repeats: int) -> float:
    state = tx.init(params)
    update = jax.jit(tx.update)
    return median_time(update, grads, state, params, repeats=repeats)


def time_torch_scion(shapes: dict[str, tuple[int, int]], repeats: int) -> float:
    """One Scion step in PyTorch (torch layout [d_out, d_in]; embeddings [V, d])."""
    import torch
    from torch_reference import scion_step

    torch_shape = lambda k, s: (s[0], s[1]) if k == "embed" else (s[1], s[0])
    params = {k: torch.randn(torch_shape(k, s)) for k, s in shapes.items()}
    grads = {k: torch.randn_like(v) for k, v in params.items()}
    scion_step(params, grads, 0.01)  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scion_step(params, grads, 0.01)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def ns_vs_matmul(m: int, n: int, repeats: int) -> dict[str, float]:
    """Achieved NS FLOP/s over a plain matmul's of the same size (fp32 and bf16)."""
    out = {}
    g = jax.random.normal(jax.random.key(0), (m, n))
    a = jax.random.normal(jax.random.key(1), (m, n))
    b = jax.random.normal(jax.random.key(2), (n, m))
    for dtype in (jnp.float32, jnp.bfloat16):
        ns = jax.jit(lambda g, dt=dtype: scion_jax.newton_schulz(g, "muon", 5, dt))
        mm = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
        t_ns = median_time(ns, g, repeats=repeats)
        t_mm = median_time(mm, a.astype(dtype), b.astype(dtype), repeats=repeats)
        ns_rate = flops(m, n, 5) / t_ns
        mm_rate = 2 * m * m * n / t_mm
        name = jnp.dtype(dtype).name
        out[f"{name} NS GFLOP/s"] = ns_rate / 1e9
        out[f"{name} matmul GFLOP/s"] = mm_rate / 1e9
        out[f"{name} NS / matmul"] = ns_rate / mm_rate
    return out


def torch_baseline() -> float | None:
    """The PyTorch step timed in a child process (the two runtimes' idle worker
    threads otherwise compete for the same cores)."""
    args = [f"--{k}={getattr(FLAGS, k)}" for k in ("d_model", "n_layers", "mlp_hidden", "vocab")]
    cmd = [sys.executable, __file__, *args, f"--repeats={FLAGS.repeats}", "--torch_child"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"PyTorch baseline skipped: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return float(out.stdout.strip().splitlines()[-1])


def main(_):
    shapes = llama_shapes(FLAGS.d_model, FLAGS.n_layers, FLAGS.mlp_hidden, FLAGS.vocab)
    if FLAGS.torch_child:
        print(time_torch_scion(shapes, FLAGS.repeats))
        return
    n_params = sum(a * b for a, b in shapes.values())
    keys = jax.random.split(jax.random.key(0), len(shapes))
    params = {k: jax.random.normal(key, s) for key, (k, s) in zip(keys, shapes.items())}
    grads = jax.tree.map(lambda p: p * 0.01 + 1.0, params)
    print(f"tree: {len(shapes)} matrices, {n_params / 1e6:.1f}M params, {jax.devices()[0]}")

    r = FLAGS.repeats
    results = {
        "scion (bf16 NS)": time_optax(scion_jax.scion(0.01, RULES), params, grads, r),
        "scion (fp32 NS)": time_optax(
            scion_jax.scion(0.01, RULES, ns_dtype="float32"), params, grads, r
        ),
        "optax.contrib.muon": time_optax(optax.contrib.muon(0.01), params, grads, r),
        "optax.adamw": time_optax(optax.adamw(1e-3), params, grads, r),
    }
    if FLAGS.torch and (t := torch_baseline()) is not None:
        results["pytorch scion (bf16 NS, compiled)"] = t
    base = results["scion (bf16 NS)"]
    print(f"\n{'update':36s} {'ms':>9s} {'scion / this':>13s}")
    for name, t in results.items():
        print(f"{name:36s} {t * 1e3:9.1f} {base / t:13.2f}")

    print("\nNewton–Schulz (muon, 5 steps) vs a plain matmul of the same size:")
    for m, n in sorted({tuple(sorted(s)) for k, s in shapes.items() if "layers" in k}):
        for key, value in ns_vs_matmul(m, n, r).items():
            print(f"  {m}x{n} {key:24s} {value:8.2f}")


if __name__ == "__main__":
    app.run(main)

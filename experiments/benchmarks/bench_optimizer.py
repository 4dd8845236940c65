"""Scion update time vs optax.contrib.muon, optax.adamw and PyTorch Scion; NS FLOP/s.

    python experiments/benchmarks/bench_optimizer.py [--d_model=512 --n_layers=4 ...]

The tree is a small Llama (TARGETS.md: d 512, 4 layers, SwiGLU 1408, vocab 8192: 21.2M
params). Every update (and the PyTorch child) is timed once per round — the median of
`--repeats` calls — in `--rounds` interleaved rounds, each round in a rotated order (no
update always runs first or last). Each time printed is the median over the rounds, each
ratio the median of its per-round ratios, with the spread of those ratios (min–max over
the rounds): a busy neighbour slows a round, not one update. The PyTorch baseline (a Scion
step written with the reference implementation's structure: Newton–Schulz in bf16 under
torch.compile) runs when torch is installed (`pip install -e .[bench]`).

The Newton–Schulz variants (Gram NS, AOL preconditioning with one step fewer) are timed
beside today's default, with their quality on `--quality_shapes` (the tree's SwiGLU shape,
the quickstart's and the 69M proxy's): cosine to the exact polar factor, its difference
to the default's, and the singular-value band, for a Gaussian matrix and for one with
singular values spread over [1e-3, 1].
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
from scion_jax.newton_schulz import flops, use_gram

FLAGS = flags.FLAGS
flags.DEFINE_integer("d_model", 512, "Model width.")
flags.DEFINE_integer("n_layers", 4, "Number of blocks.")
flags.DEFINE_integer("mlp_hidden", 1408, "SwiGLU hidden size.")
flags.DEFINE_integer("vocab", 8192, "Vocabulary size.")
flags.DEFINE_integer("repeats", 3, "Timed calls per update per round (their median).")
flags.DEFINE_integer("rounds", 7, "Interleaved rounds (times and ratios: median over rounds).")
flags.DEFINE_list(
    "quality_shapes", ["512x1408", "128x384", "256x704"], "m×n shapes of the NS quality table."
)
flags.DEFINE_bool("ns_throughput", True, "Also time NS against a plain matmul of each shape.")
flags.DEFINE_bool("torch", True, "Also time the PyTorch Scion baseline, if torch is installed.")
flags.DEFINE_bool("torch_child", False, "Internal: time only the PyTorch step and print it.")

RULES = [("embed", "l1_to_rms"), ("unembed", "rms_to_inf"), (".*", "rms_to_rms")]
# Newton–Schulz settings of each timed scion variant (bf16 operands).
VARIANTS = {
    "scion (bf16 NS)": dict(),
    "scion gram": dict(ns_gram=True),
    "scion aol, 4 steps": dict(ns_preconditioning="aol", ns_steps=4),
    "scion gram + aol, 4 steps": dict(ns_gram=True, ns_preconditioning="aol", ns_steps=4),
}


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


def random_tree(shapes: dict[str, tuple[int, int]]):
    """(params, grads): Gaussian parameters of `shapes` and gradients derived from them."""
    keys = jax.random.split(jax.random.key(0), len(shapes))
    params = {k: jax.random.normal(key, s) for key, (k, s) in zip(keys, shapes.items())}
    grads = jax.tree.map(lambda p: p * 0.01 + 1.0, params)
    return params, grads


def jitted_update(tx: optax.GradientTransformation, params, grads):
    """(the jitted update, its arguments); `median_time` compiles it in its warm-up call."""
    return jax.jit(tx.update), (grads, tx.init(params), params)


def summarize(rounds: list[dict[str, float]], base: str, ref: str | None):
    """{name: (median s, (median, min, max) of s ÷ base's, of s ÷ ref's or None, the rounds
    (1-based) that lack it)} over rounds of {name: seconds}, each over the rounds that timed
    it (the PyTorch child can fail in some); the ratios are taken within each round."""

    def stats(values):
        if not values:
            return None
        return float(np.median(values)), float(np.min(values)), float(np.max(values))

    out = {}
    for name in dict.fromkeys(n for r in rounds for n in r):
        timed = [r for r in rounds if name in r]
        vs_base = stats([r[name] / r[base] for r in timed])
        vs_ref = stats([r[name] / r[ref] for r in timed if ref in r])
        missing = [i + 1 for i, r in enumerate(rounds) if name not in r]
        out[name] = (float(np.median([r[name] for r in timed])), vs_base, vs_ref, missing)
    return out


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
        if use_gram(m, n, 5, dtype):  # Gram NS's own FLOPs (fewer) at its own speed
            gram = jax.jit(lambda g, dt=dtype: scion_jax.newton_schulz(g, "muon", 5, dt, gram=True))
            t_gram = median_time(gram, g, repeats=repeats)
            out[f"{name} gram NS / matmul"] = flops(m, n, 5, True, dtype) / t_gram / mm_rate
            out[f"{name} gram NS time / NS"] = t_gram / t_ns
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


def ns_quality(m: int, n: int) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(variant, input): (σ_min, σ_max, cosine to the float64 polar factor)} of each
    variant's bf16 NS."""
    rng = np.random.default_rng(0)
    gauss = rng.standard_normal((m, n))
    u, _, vt = np.linalg.svd(gauss, full_matrices=False)
    spread = (u * np.geomspace(1e-3, 1.0, min(m, n))) @ vt
    out = {}
    for label, g in (("gaussian", gauss), ("σ in [1e-3, 1]", spread)):
        pu, _, pvt = np.linalg.svd(g, full_matrices=False)
        polar = pu @ pvt
        for name, kw in VARIANTS.items():
            opts = dict(gram=kw.get("ns_gram", False),
                        preconditioning=kw.get("ns_preconditioning", "frobenius"))
            x = scion_jax.newton_schulz(
                jnp.asarray(g, jnp.float32), "muon", kw.get("ns_steps", 5), **opts
            )
            x = np.asarray(x, np.float64)
            sv = np.linalg.svd(x, compute_uv=False)
            cos = np.sum(x * polar) / (np.linalg.norm(x) * np.linalg.norm(polar))
            out[name, label] = (sv.min(), sv.max(), cos)
    return out


def main(_):
    shapes = llama_shapes(FLAGS.d_model, FLAGS.n_layers, FLAGS.mlp_hidden, FLAGS.vocab)
    if FLAGS.torch_child:
        print(time_torch_scion(shapes, FLAGS.repeats))
        return
    n_params = sum(a * b for a, b in shapes.values())
    params, grads = random_tree(shapes)
    print(f"tree: {len(shapes)} matrices, {n_params / 1e6:.1f}M params, {jax.devices()[0]}")

    r = FLAGS.repeats
    txs = {name: scion_jax.scion(0.01, RULES, **kw) for name, kw in VARIANTS.items()}
    txs |= {
        "scion (fp32 NS)": scion_jax.scion(0.01, RULES, ns_dtype="float32"),
        "optax.contrib.muon": optax.contrib.muon(0.01),
        "optax.adamw": optax.adamw(1e-3),
    }
    updates = {name: jitted_update(tx, params, grads) for name, tx in txs.items()}
    base, torch_name = "scion (bf16 NS)", "pytorch scion (bf16 NS, compiled)"
    names = [*updates, torch_name] if FLAGS.torch else list(updates)
    rounds: list[dict[str, float]] = []
    for i in range(FLAGS.rounds):
        times = {}
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotated order
            if name == torch_name:
                if (t := torch_baseline()) is not None:
                    times[name] = t
            else:
                times[name] = median_time(updates[name][0], *updates[name][1], repeats=r)
        rounds.append({name: times[name] for name in names if name in times})
        print(f"round {i + 1}: " + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in rounds[-1].items())
              + " ms", flush=True)
    print(f"\n{FLAGS.rounds} interleaved rounds (median of {r} calls each); ratios: median "
          "[min–max] of the per-round ratios")
    print(f"{'update':36s} {'ms':>9s} {'this / default':>22s} {'this / pytorch':>22s}")
    fmt = lambda q: f"{q[0]:6.2f} [{q[1]:.2f}–{q[2]:.2f}]"  # noqa: E731
    for name, (t, vs_base, vs_torch, missing) in summarize(rounds, base, torch_name).items():
        print(f"{name:36s} {t * 1e3:9.1f} {fmt(vs_base):>22s} "
              f"{fmt(vs_torch) if vs_torch else '':>22s}"
              + (f"  (not timed in round {', '.join(map(str, missing))})" if missing else ""))

    for shape in FLAGS.quality_shapes:
        m, n = (int(v) for v in shape.lower().split("x"))
        print(f"\nQuality of bf16 Newton–Schulz (Muon coefficients) on a {m}x{n} matrix:")
        print(f"  {'variant, input':54s} {'σ_min':>6s} {'σ_max':>6s} {'cos to polar':>12s} "
              f"{'− default':>10s}")
        quality = ns_quality(m, n)
        for (name, label), (lo, hi, cos) in quality.items():
            default = quality[base, label][2]
            print(f"  {name + ', ' + label:54s} {lo:6.3f} {hi:6.3f} {cos:12.4f} "
                  f"{cos - default:+10.4f}")

    if not FLAGS.ns_throughput:
        return
    print("\nNewton–Schulz (muon, 5 steps) vs a plain matmul of the same size:")
    for m, n in sorted({tuple(sorted(s)) for k, s in shapes.items() if "layers" in k}):
        for key, value in ns_vs_matmul(m, n, max(r, 5)).items():
            print(f"  {m}x{n} {key:24s} {value:8.2f}")


if __name__ == "__main__":
    app.run(main)

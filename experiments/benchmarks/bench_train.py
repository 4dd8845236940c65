"""Training throughput (tokens/s), MFU and the optimizer's share of the step, on CPU.

    python experiments/benchmarks/bench_train.py [--widths=128,256,512 --torch]
        [--compute_dtype=float32] [--attention=blockwise]

For each width (4 layers, head_dim 64, seq 256, batch 16, vocab 256 — TARGETS.md):
tokens/s of the jitted train step with scion and with adamw, MFU = model FLOPs
(6·N_matmul + attention, forward + backward) / the measured matmul peak in the step's
compute dtype (bf16 operands, fp32 accumulation: `matmul_peak`; "fp32 MFU" against the
fp32 matmul's, what this column used to be), and the
optimizer's share = 1 − t(forward+backward only) / t(full step), and the cost of the
trainer's norm log every 16 steps relative to those steps (target ≤ 3%): every layer's
parameter norm (exact SVD) and per-group summaries ("norms"), and that plus the update's
norms and the parameter copy they need ("+updates", the trainer's default). Tokens/s come
from consecutive steps (as PyTorch's are timed); the logs' cost from rounds that interleave
the step and both logs. Sets the project's XLA:CPU options first (`scion_jax.xla_cpu`),
and runs the step as `experiments/run.py` does: data parallel over one CPU device per core
(`--cpu_devices=1`: one device, whose intra-op threads use every core).
With --torch, the same architecture in PyTorch (torch.compile'd model, Scion step) at each
width, timed in a child process, for the ratio ours / PyTorch measured in the same run. The
PyTorch model computes in float32 (its Newton–Schulz in bf16, as ours); ours computes in
--compute_dtype (the project's default bf16; float32 is the like-for-like comparison).

--profile prints, instead, where the Scion step's time goes at each width (a `jax.profiler`
trace joined with the compiled HLO: `scion_jax.hlo_stats.time_shares`).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import memory  # experiments/benchmarks/memory.py
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from scion_jax import hlo_stats, xla_cpu
from scion_jax.model import model_flops_per_token
from scion_jax.train.config import base_config
from scion_jax.train.metrics import norm_log_device, norm_logger
from scion_jax.train.optim import model_rules
from scion_jax.train.trainer import model_config

FLAGS = flags.FLAGS
flags.DEFINE_list("widths", ["128", "256", "512"], "d_model values.")
flags.DEFINE_integer("n_layers", 4, "Blocks.")
flags.DEFINE_integer("seq_len", 256, "Sequence length.")
flags.DEFINE_integer("batch", 16, "Sequences per step.")
flags.DEFINE_enum(
    "compute_dtype",
    "bfloat16",
    ["bfloat16", "float32"],
    "JAX activations' dtype (parameters fp32); the PyTorch baseline computes in float32.",
)
flags.DEFINE_enum(
    "attention", None, ["xla", "einsum", "blockwise"], "model.attention (default: the config's)."
)
flags.DEFINE_integer("steps", 10, "Timed steps per measurement (median reported).")
flags.DEFINE_integer(
    "cpu_devices",
    0,
    "CPU devices, the step data parallel over them (0: as experiments/run.py, one per "
    "logical CPU, up to 2, as many as divide --batch; 1: one device).",
)
flags.DEFINE_bool(
    "profile",
    False,
    "Instead of the throughput table: per width, the share of the Scion step's kernel time "
    "in matmuls, attention, elementwise/convert fusions and the optimizer (a profiler trace).",
)
flags.DEFINE_bool("torch", True, "Also time PyTorch (torch.compile + Scion) in a child process.")
flags.DEFINE_integer("torch_child", 0, "Internal: time PyTorch at this width and print tokens/s.")


def _median_step_time(fn, state, batch, steps: int) -> float:
    state, out = fn(state, batch)  # compile
    jax.block_until_ready(out)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, out = fn(state, batch)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def matmul_peak(dtype, sizes=(1024, 2048), repeats: int = 5) -> tuple[float, str]:
    """(FLOP/s, what gave it): the best median rate of an n³ matmul with `dtype` operands
    and fp32 accumulation (how the step's bf16 matmuls run), over `sizes`, on one device
    and, with several, on all of them at once (one matrix each, as the data-parallel step
    runs). The peak the step could reach in its compute dtype."""
    best = (0.0, "")
    devices = jax.devices()
    for n in sizes:
        for count in sorted({1, len(devices)}):
            mesh = jax.make_mesh((count,), ("d",), devices=devices[:count])
            a = jax.device_put(
                jax.random.normal(jax.random.key(0), (count, n, n)).astype(dtype),
                NamedSharding(mesh, P("d")),
            )
            mm = jax.jit(lambda a: jnp.matmul(a, a, preferred_element_type=jnp.float32))
            mm(a).block_until_ready()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                mm(a).block_until_ready()
                times.append(time.perf_counter() - start)
            rate = count * 2 * n**3 / float(np.median(times))
            if rate > best[0]:
                best = (rate, f"{n}³ on {count} device(s)")
    return best


def _config(width: int, optimizer: str):
    c = base_config()
    c.seq_len, c.batch_size = FLAGS.seq_len, FLAGS.batch
    c.model.update(
        d_model=width,
        n_layers=FLAGS.n_layers,
        n_heads=max(width // 64, 1),
        vocab_size=256,
        compute_dtype=FLAGS.compute_dtype,
    )
    if FLAGS.attention:
        c.model.attention = FLAGS.attention
    c.optimizer.name = optimizer
    c.optimizer.learning_rate = 2.0**-6 if optimizer == "scion" else 1e-3
    return c


def _setup(width: int, optimizer: str):
    """The train step as `experiments/run.py` runs it (`memory.train_setup`): (config, model
    config, mesh, jitted step, loss_fn, fresh() -> a copy of the initial state, batch)."""
    config = _config(width, optimizer)
    config.mesh.data = jax.device_count()  # data parallel over the CPU devices, as `train` runs
    step, loss_fn, state, batch, cfg, mesh = memory.train_setup(config)
    fresh = lambda: jax.tree.map(jnp.copy, state)  # the step donates its state
    return config, cfg, mesh, step, loss_fn, fresh, batch


def jax_tokens_per_s(width: int, optimizer: str) -> tuple[float, float, float, float, float]:
    """(tokens/s, step s, forward+backward-only s, the norm log's and the log with update
    norms' share of 16 steps), data parallel over the CPU devices."""
    config, cfg, mesh, step, loss_fn, fresh, batch = _setup(width, optimizer)
    grad_only = jax.jit(lambda s, b: (s, jax.grad(loss_fn)(s["params"], b)))
    t_grad = _median_step_time(grad_only, fresh(), batch, FLAGS.steps)
    log = jax.jit(norm_logger(model_rules(config, cfg)))
    copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p))  # as the trainer: before the step

    device = norm_log_device(mesh)  # as the trainer: one device of a CPU host's mesh
    to_log_device = lambda tree: tree if device is None else jax.device_put(tree, device)

    def params_log(s, b):
        return s, log(to_log_device(s["params"]))

    def full_log(s, b):  # the trainer's: copy before the step, then both norm sets
        return s, log(*to_log_device((s["params"], copy(s["params"]))))

    # Throughput from consecutive steps, as the PyTorch child times its own; the logs'
    # cost from rounds interleaved with the step (an SVD log between two steps slows the
    # next step by evicting its working set: ≈ 25% at d 64, which training pays only once
    # per `norm_every` steps).
    t_step = _median_step_time(step, fresh(), batch, FLAGS.steps)
    t_step_i, t_norms, t_full = _interleaved_median((step, params_log, full_log), fresh(), batch)
    # Norms logged every 16 steps (target ≤ 3%): the log's cost over 16 steps.
    return (FLAGS.batch * FLAGS.seq_len / t_step, t_step, t_grad, t_norms / (16 * t_step_i),
            t_full / (16 * t_step_i))


def profile_shares(width: int, optimizer: str = "scion") -> dict[str, float]:
    """Where the step's time goes: a `jax.profiler` trace of `--steps` steps, each kernel
    joined with the compiled step's HLO (`hlo_stats.time_shares`: the shares of kernel
    time in the optimizer, attention, the model's matmuls, elementwise / convert fusions
    and the rest), and "busy": kernel time ÷ (devices × the steps' wall time)."""
    *_, mesh, step, _, fresh, batch = _setup(width, optimizer)
    state = fresh()
    hlo = step.lower(state, batch).compile().as_text()
    for _ in range(2):  # compile, warm up
        state, out = step(state, batch)
    jax.block_until_ready(out)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                state, out = step(state, batch)
                jax.block_until_ready(out)
            wall = time.perf_counter() - start
        (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    shares = hlo_stats.time_shares(hlo, events)
    shares["step_ms"] = wall / FLAGS.steps * 1e3
    shares["busy"] = shares["kernel_us"] * 1e-6 / (mesh.size * wall)
    return shares


def _interleaved_median(fns, state, batch) -> list[float]:
    """Median seconds of each fn(state, batch) -> (state, out), timed in alternation."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:  # compile
        state, out = fn(state, batch)
        jax.block_until_ready(out)
    for _ in range(FLAGS.steps):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            state, out = fn(state, batch)
            jax.block_until_ready(out)
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def torch_tokens_per_s(width: int) -> float:
    import torch
    import torch.nn.functional as F
    from torch_reference import Llama, scion_step

    heads = max(width // 64, 1)
    hidden = 64 * -(-8 * width // 3 // 64)
    model = Llama(256, width, FLAGS.n_layers, heads, 64, hidden)
    compiled = torch.compile(model)
    tokens = torch.randint(0, 256, (FLAGS.batch, FLAGS.seq_len + 1))
    named = dict(model.named_parameters())
    # Scion roles by name: embedding / unembedding rows, the rest spectral.
    named = {
        ("embed" if k.startswith("embed") else "unembed" if k.startswith("unembed") else k): v
        for k, v in named.items()
    }

    def step():
        loss = F.cross_entropy(compiled(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        model.zero_grad(set_to_none=True)
        loss.backward()
        scion_step(named, {k: v.grad for k, v in named.items()}, 2.0**-6)

    for _ in range(2):
        step()  # compile
    times = []
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return FLAGS.batch * FLAGS.seq_len / float(np.median(times))


def _torch_in_child(width: int) -> float | None:
    cmd = [
        sys.executable,
        __file__,
        f"--torch_child={width}",
        f"--n_layers={FLAGS.n_layers}",
        f"--seq_len={FLAGS.seq_len}",
        f"--batch={FLAGS.batch}",
        f"--steps={FLAGS.steps}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"PyTorch baseline skipped: {out.stderr.strip().splitlines()[-1:]}")
        return None
    return float(out.stdout.strip().splitlines()[-1])


def main(_):
    # The project's XLA:CPU options and CPU devices, as experiments/run.py sets them.
    xla_cpu.set_flags(FLAGS.cpu_devices or xla_cpu.cpu_devices(FLAGS.batch))
    if FLAGS.torch_child:
        print(torch_tokens_per_s(FLAGS.torch_child))
        return
    if FLAGS.profile:
        print(f"profile of the scion step, {FLAGS.steps} steps, on {jax.device_count()} "
              f"CPU device(s); shares of kernel time")
        cols = ("matmul", "attention", "elementwise", "optimizer", "other")
        head = " ".join(f"{c:>11s}" for c in cols)
        print(f"{'d':>5s} {head} {'step ms':>8s} {'busy':>6s}")
        for width in map(int, FLAGS.widths):
            r = profile_shares(width)
            print(f"{width:5d} " + " ".join(f"{r[c]:11.1%}" for c in cols)
                  + f" {r['step_ms']:8.1f} {r['busy']:6.1%}")
        return
    dtype = jnp.dtype(FLAGS.compute_dtype)
    peak, peak_how = matmul_peak(dtype)
    fp32_peak, fp32_how = matmul_peak(jnp.float32) if dtype != jnp.float32 else (peak, peak_how)
    print(f"measured matmul peak, {dtype.name} operands (the step's; MFU against it): "
          f"{peak / 1e9:,.0f} GFLOP/s ({peak_how})")
    print(f"measured matmul peak, float32: {fp32_peak / 1e9:,.0f} GFLOP/s ({fp32_how}), "
          f"on {jax.devices()[0].device_kind}")
    print(f"our step: data parallel over {jax.device_count()} CPU device(s)")
    header = (
        f"{'d':>5s} {'opt':>6s} {'tokens/s':>10s} {'MFU':>6s} {'fp32 MFU':>9s} {'opt share':>10s} "
        f"{'norms/16 steps':>15s} {'+updates':>9s} {'torch tok/s':>12s} {'ours/torch':>11s}"
    )
    print(header)
    for width in map(int, FLAGS.widths):
        torch_tps = _torch_in_child(width) if FLAGS.torch else None
        flops_per_token = model_flops_per_token(
            model_config(_config(width, "scion")), FLAGS.seq_len
        )
        for optimizer in ("scion", "adamw"):
            tps, t_step, t_grad, norm_cost, full_cost = jax_tokens_per_s(width, optimizer)
            mfu = tps * flops_per_token / peak
            fp32_mfu = tps * flops_per_token / fp32_peak
            share = max(0.0, 1 - t_grad / t_step)
            torch_cols = ("", "")
            if torch_tps and optimizer == "scion":
                torch_cols = (f"{torch_tps:,.0f}", f"{tps / torch_tps:.2f}")
            print(
                f"{width:5d} {optimizer:>6s} {tps:10,.0f} {mfu:6.1%} {fp32_mfu:9.1%} {share:10.1%} "
                f"{norm_cost:15.1%} {full_cost:9.1%} {torch_cols[0]:>12s} {torch_cols[1]:>11s}"
            )


if __name__ == "__main__":
    app.run(main)

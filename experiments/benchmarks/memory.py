"""Per-device memory of the full train step (optimizer included), from abstract shapes.

    python experiments/benchmarks/memory.py --config=experiments/configs/proxy_69m.py \\
        --per_device_batch=32 --config.mesh.data=1 [--json]
    python experiments/benchmarks/memory.py --config=experiments/configs/width_1p3b.py \\
        --devices=8 --per_device_batch=4 --config.mesh.data=1 --config.mesh.fsdp=8

Compiles the trainer's jitted step (`scion_jax.train.trainer.jit_train_step`, state donated, the
run's shardings) with ``jax.ShapeDtypeStruct`` inputs, nothing allocated, and prints XLA's
``memory_analysis()`` per device: arguments (state + batch), outputs, the aliased part
(donated state reused for the new state), temporaries, and total = arguments + outputs −
aliased + temporaries. Memory is linear in the rows each device processes at once (the
per-device batch / microbatches): a second compile at half (or twice) those rows gives
fixed + per-row bytes, hence the largest per-device batch that fits each budget (16, 40 and
80 GiB) at the config's microbatches. `--devices=N` fakes N host devices (CPU). Figures are
XLA:CPU's; GPU/TPU compilers lay buffers out differently.

`--time_options` instead times the CPU quickstart step with the memory options off and on
(blockwise attention, chunked loss, per-block remat), interleaved, and prints the ratio.
"""

from __future__ import annotations

import os
import sys

for _arg in sys.argv[1:]:  # before jax is imported: fake host devices
    if _arg.startswith("--devices="):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={_arg.split('=')[1]}"
        )

import importlib.util  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from scion_jax.model import init_model, param_specs  # noqa: E402
from scion_jax.train.loss import resolve_chunk  # noqa: E402
from scion_jax.train.optim import make_optimizer  # noqa: E402
from scion_jax.train.trainer import (  # noqa: E402
    BATCH_SPEC,
    init_state,
    jit_train_step,
    make_mesh,
    model_config,
)

GIB = 2**30
BUDGETS_GIB = (16, 40, 80)

FLAGS = flags.FLAGS


def define_flags():
    """The CLI's flags, defined only when run as a script: importing this module (the tests
    do) must not claim absl's global `--config` flag, which other tools define too."""
    config_flags.DEFINE_config_file("config", None, "Config file (ml_collections).")
    flags.DEFINE_integer("per_device_batch", 0, "Sequences per device per step (0: config's).")
    flags.DEFINE_integer("devices", 0, "Fake this many CPU devices (read before jax starts).")
    flags.DEFINE_bool("json", False, "Print one JSON object instead of the table.")
    flags.DEFINE_bool("time_options", False, "Time the quickstart step, memory options off/on.")
    flags.DEFINE_integer("rounds", 7, "--time_options: interleaved rounds (median reported).")


def step_memory(config, per_device_batch: int) -> dict[str, int]:
    """XLA's per-device bytes of the compiled train step at `per_device_batch` sequences."""
    config = config.copy_and_resolve_references()
    mesh = make_mesh(config)
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    config.batch_size = per_device_batch * dp
    make_mesh(config)  # validates batch vs microbatches × data-parallel size
    model_cfg = model_config(config)
    tx = make_optimizer(config, model_cfg, mesh)
    abstract = nnx.eval_shape(lambda: init_model(model_cfg, jax.random.key(0)))
    graphdef, params = nnx.split(abstract, nnx.Param)
    shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, s), param_specs(params), is_leaf=lambda x: isinstance(x, P)
    )
    params = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, shardings
    )
    # Optimizer state takes the shardings GSPMD gives it, as in the trainer.
    replicated = NamedSharding(mesh, P())
    init = jax.jit(tx.init).lower(params).compile()
    opt_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=s if isinstance(s, NamedSharding) else replicated
        ),
        jax.eval_shape(tx.init, params),
        init.output_shardings,
    )
    state = {
        "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated),
        "params": params,
        "opt_state": opt_state,
    }
    state_shardings = jax.tree.map(lambda x: x.sharding, state)
    batch_sharding = NamedSharding(mesh, BATCH_SPEC)
    tokens = jax.ShapeDtypeStruct(
        (config.batch_size, config.seq_len), jnp.int32, sharding=batch_sharding
    )
    _, step = jit_train_step(config, graphdef, tx, mesh, state_shardings)
    m = step.lower(state, {"inputs": tokens, "targets": tokens}).compile().memory_analysis()
    out = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
    }
    out["total_bytes"] = (
        out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] + out["temp_bytes"]
    )
    return out


def fit_batches(
    points: dict[int, int], microbatches: int, budgets_gib=BUDGETS_GIB
) -> tuple[float, float, dict[str, int]]:
    """(fixed bytes, bytes per row, {budget GiB: largest per-device batch}) from totals at
    two row counts ``{rows per device per microbatch: total bytes}``. A per-device batch b
    runs b / microbatches rows at once and fits when fixed + per_row · rows ≤ budget; 0
    means not even one row fits."""
    (r0, t0), (r1, t1) = sorted(points.items())
    per_row = (t1 - t0) / (r1 - r0)
    fixed = t0 - per_row * r0
    fits = {}
    for gib in budgets_gib:
        room = gib * GIB - fixed
        rows = int(room // per_row) if per_row > 0 else 0
        fits[str(gib)] = max(rows, 0) * microbatches
    return fixed, per_row, fits


def memory_report(config, per_device_batch: int = 0) -> dict:
    """The report of one config: bytes at `per_device_batch` (0: the config's) and the
    largest per-device batch per budget."""
    mesh = make_mesh(config)
    dp = mesh.shape["data"] * mesh.shape["fsdp"]
    batch = per_device_batch or config.batch_size // dp
    micro = config.microbatches
    if batch % micro:
        raise ValueError(
            f"--per_device_batch={batch} must be a multiple of config.microbatches={micro}."
        )
    rows = batch // micro
    other = rows // 2 if rows > 1 else 2
    report = step_memory(config, batch)
    points = {rows: report["total_bytes"], other: step_memory(config, other * micro)["total_bytes"]}
    fixed, per_row, fits = fit_batches(points, micro)
    model = config.model
    return {
        "per_device_batch": batch,
        "microbatches": micro,
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "seq_len": config.seq_len,
        "attention": model.attention,
        "remat": model.remat,
        "loss_chunk": resolve_chunk(config.loss_chunk, model.vocab_size),
        "scan_layers": model.scan_layers,
        **report,
        "fixed_bytes": fixed,
        "bytes_per_row": per_row,
        "max_per_device_batch": fits,
    }


def train_setup(config):
    """The train step of `config` as `train` builds it: (jitted step, loss_fn, initial state
    (`init_state`), a batch of random tokens, model config, mesh). The step donates its
    state: pass it a copy to reuse the initial one."""
    mesh = make_mesh(config)
    model_cfg = model_config(config)
    tx = make_optimizer(config, model_cfg, mesh)
    graphdef, state, shardings = init_state(config, model_cfg, tx, mesh)
    loss_fn, step = jit_train_step(config, graphdef, tx, mesh, shardings)
    tokens = jax.random.randint(
        jax.random.key(1), (config.batch_size, config.seq_len + 1), 0, model_cfg.vocab_size
    )
    batch = jax.device_put(
        {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}, NamedSharding(mesh, BATCH_SPEC)
    )
    return step, loss_fn, state, batch, model_cfg, mesh


def time_options(rounds: int) -> dict[str, float]:
    """Median step seconds of the quickstart config with the memory options off and on
    (timed alternately in each round, one device), and their ratio."""
    path = os.path.join(os.path.dirname(__file__), "..", "configs", "quickstart.py")
    spec = importlib.util.spec_from_file_location("quickstart", path)
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)

    def build(on: bool):
        config = quickstart.get_config()
        config.mesh.data = 1
        if on:
            config.model.update(attention="blockwise", attention_block=128, remat="block")
            config.loss_chunk = 64
        step, _, state, batch, _, _ = train_setup(config)
        return step, state, batch

    runs = {"off": build(False), "on": build(True)}
    states = {}
    for name, (step, state, batch) in runs.items():  # compile
        states[name], metrics = step(state, batch)
        jax.block_until_ready(metrics)
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (step, _, batch) in runs.items():
            start = time.perf_counter()
            states[name], metrics = step(states[name], batch)
            jax.block_until_ready(metrics)
            times[name].append(time.perf_counter() - start)
    off, on = (float(np.median(times[k])) for k in ("off", "on"))
    return {"off_s": off, "on_s": on, "ratio": on / off}


def main(_):
    if FLAGS.time_options:
        t = time_options(FLAGS.rounds)
        print(
            f"quickstart step, median of {FLAGS.rounds} interleaved rounds: options off "
            f"{t['off_s'] * 1e3:.0f} ms, on {t['on_s'] * 1e3:.0f} ms, on/off = {t['ratio']:.3f}"
        )
        return
    if FLAGS.config is None:
        raise app.UsageError("--config is required.")
    r = memory_report(FLAGS.config, FLAGS.per_device_batch)
    if FLAGS.json:
        print(json.dumps(r))
        return
    print(
        f"mesh {r['mesh']}, {r['per_device_batch']} sequences/device × {r['seq_len']} "
        f"positions, microbatches {r['microbatches']}, attention {r['attention']}, "
        f"remat {r['remat']}, loss_chunk {r['loss_chunk']}"
    )
    for key in ("argument", "output", "alias", "temp", "total"):
        print(f"  {key + ' bytes':<15s} {r[key + '_bytes'] / GIB:9.3f} GiB")
    print(
        f"  linear fit: {r['fixed_bytes'] / GIB:.2f} GiB + "
        f"{r['bytes_per_row'] / GIB:.3f} GiB per sequence in a microbatch"
    )
    for gib, batch in r["max_per_device_batch"].items():
        print(f"  largest per-device batch in {gib:>2s} GiB: {batch}")


if __name__ == "__main__":
    define_flags()
    app.run(main)

"""What the trainer's preemption agreement costs per step (issue 28), at the quickstart size.

    python experiments/benchmarks/bench_preemption.py [--rounds=8 --steps=8]

Runs itself as 2 processes × 2 CPU devices joined by `jax.distributed` on 127.0.0.1, mesh
data 2 × fsdp 2 (the pod of issue 28), with experiments/configs/quickstart.py's model,
batch and optimizer. In a multi-process run the trainer calls `Preemption.stop()` after
every step: an all-reduce of the processes' SIGTERM flags, read one step later (a
single-process run only reads its flag). Timed on process 0: rounds of `--steps` train
steps without and with `stop()` after each, in alternating order (the ratio of their
total times, and the median of the rounds' ratios), and `stop()` alone, back to back
(one all-reduce round trip each), against the step.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 8, "Rounds, each timing both loops.")
flags.DEFINE_integer("steps", 8, "Train steps per loop.")
flags.DEFINE_integer("process_id", -1, "Internal: this process's index (-1: start both).")
flags.DEFINE_integer("port", 0, "Internal: the coordinator's port.")

PROCESSES, DEVICES = 2, 2


def _start_processes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = [sys.executable, __file__, f"--port={port}", f"--rounds={FLAGS.rounds}",
              f"--steps={FLAGS.steps}"]
    procs = [
        subprocess.Popen(
            [*common, f"--process_id={i}"],
            stdout=None if i == 0 else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(PROCESSES)
    ]
    try:
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(codes):
        sys.exit(f"bench_preemption: the processes exited with {codes}")


def _measure() -> None:
    from scion_jax import xla_cpu

    xla_cpu.set_flags(DEVICES)  # before JAX starts its backend, as experiments/run.py
    import jax
    import numpy as np
    from jax.sharding import NamedSharding

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{FLAGS.port}", PROCESSES, FLAGS.process_id)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    import quickstart

    from scion_jax.train.optim import make_optimizer
    from scion_jax.train.trainer import (
        BATCH_SPEC,
        Preemption,
        init_state,
        jit_train_step,
        make_mesh,
        model_config,
    )

    config = quickstart.get_config()
    config.mesh.data, config.mesh.fsdp = 2, 2
    mesh = make_mesh(config)
    model_cfg = model_config(config)
    tx = make_optimizer(config, model_cfg, mesh)
    graphdef, state, shardings = init_state(config, model_cfg, tx, mesh)
    _, step = jit_train_step(config, graphdef, tx, mesh, shardings)
    rows = config.batch_size // PROCESSES  # this process's rows, as the trainer feeds them
    tokens = np.random.default_rng(FLAGS.process_id).integers(
        0, model_cfg.vocab_size, (rows, config.seq_len + 1), dtype=np.int32
    )
    batch = {
        k: jax.make_array_from_process_local_data(NamedSharding(mesh, BATCH_SPEC), v)
        for k, v in (("inputs", tokens[:, :-1]), ("targets", tokens[:, 1:]))
    }

    with Preemption(mesh) as preemption:

        def loop(state, agree: bool):
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                state, metrics = step(state, batch)
                if agree:
                    assert not preemption.stop()
            jax.block_until_ready((state, metrics))
            return state, time.perf_counter() - start

        state, _ = loop(state, True)  # compile both
        plain, agreed = [], []
        for r in range(FLAGS.rounds):
            for agree in (r % 2 == 1, r % 2 == 0):
                state, t = loop(state, agree)
                (agreed if agree else plain).append(t)
        calls = 50
        start = time.perf_counter()
        for _ in range(calls):
            preemption.stop()
        t_stop = (time.perf_counter() - start) / calls

    if FLAGS.process_id == 0:
        t_step = sum(plain) / (FLAGS.rounds * FLAGS.steps)
        ratios = np.array(agreed) / np.array(plain)
        print(f"{PROCESSES} processes × {DEVICES} CPU devices, quickstart model and batch, "
              f"{FLAGS.rounds} rounds of {FLAGS.steps} steps")
        print(f"step with stop() ÷ step without: {sum(agreed) / sum(plain):.4f} "
              f"(median of rounds {np.median(ratios):.4f}; rounds {np.round(ratios, 3)})")
        print(f"stop() alone ÷ step: {t_stop / t_step:.4%}")
    jax.distributed.shutdown()


def main(_):
    if FLAGS.process_id < 0:
        _start_processes()
    else:
        _measure()


if __name__ == "__main__":
    app.run(main)

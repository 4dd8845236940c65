"""The training loop: one jitted step on a device mesh, norm logging, eval, checkpoints.

State is ``{"step", "params", "opt_state"}`` with every array placed by `NamedSharding`
(params by the model's logical-axis table; optimizer state follows its parameter). The
step is a single `jax.jit` with explicit in/out shardings and the state donated.
Rerunning the same command resumes from the newest readable checkpoint, exactly.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from scion_jax import data as data_lib
from scion_jax.model import ModelConfig, init_model, model_flops_per_token, param_specs
from scion_jax.train import config as config_lib
from scion_jax.train.checkpoint import Checkpoints, abstract_like
from scion_jax.train.loss import lm_loss, resolve_chunk
from scion_jax.train.metrics import MetricsWriter, norm_log_device, norm_logger, plot_summary
from scion_jax.train.optim import make_optimizer, make_schedule, model_rules

BATCH_SPEC = P(("data", "fsdp"), None)


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
    m = dict(config.model)
    m["n_kv_heads"] = m["n_kv_heads"] or None
    m["mlp_hidden"] = m["mlp_hidden"] or None
    m["param_dtype"] = jnp.dtype(m["param_dtype"])
    m["compute_dtype"] = jnp.dtype(m["compute_dtype"])
    return ModelConfig(max_seq_len=config.seq_len, **m)


def make_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    shape = config_lib.validate(config, jax.device_count(), jax.process_count())
    sizes = tuple(shape[a] for a in config_lib.MESH_AXES)
    n = math.prod(sizes)
    if n < jax.device_count():
        logging.warning("config.mesh uses %d of the %d devices.", n, jax.device_count())
    return jax.make_mesh(
        sizes,
        config_lib.MESH_AXES,
        axis_types=(AxisType.Auto,) * len(config_lib.MESH_AXES),
        devices=jax.devices()[:n],
    )


def make_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    loss_chunk: int = 0,
    microbatches: int = 1,
    mesh: jax.sharding.Mesh | None = None,
):
    """(loss_fn(params, batch), step_fn(state, batch) -> (state, metrics)), unjitted.

    `loss_chunk` > 0: the chunked cross-entropy over that many positions at a time
    (`scion_jax.train.loss`). `microbatches` > 1: the batch's rows are split into that many
    microbatches (row r goes to microbatch r mod M, so each stays spread over the data
    axes), run one after another by ``lax.scan``, their gradients summed in fp32, and one
    optimizer update made: the mean loss and gradient of the whole batch. With `mesh`, the
    model's activations are pinned to the batch axes (`Transformer.hidden`).
    """

    def micro_loss(params, batch):
        model = nnx.merge(graphdef, params)
        if mesh is None:
            return lm_loss(model, batch["inputs"], batch["targets"], loss_chunk)
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return lm_loss(model, batch["inputs"], batch["targets"], loss_chunk)

    def split(batch):
        return jax.tree.map(
            lambda x: x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(
                0, 1
            ),
            batch,
        )

    def loss_and_grads(params, batch):
        if microbatches == 1:
            return jax.value_and_grad(micro_loss)(params, batch)

        def one(acc, micro):
            loss, grads = jax.value_and_grad(micro_loss)(params, micro)
            return jax.tree.map(lambda a, x: a + x.astype(jnp.float32), acc, (loss, grads)), None

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), (jnp.zeros(()), params))
        (loss, grads), _ = jax.lax.scan(one, zeros, split(batch))
        grads = jax.tree.map(lambda g, p: (g / microbatches).astype(p.dtype), grads, params)
        return loss / microbatches, grads

    def loss_fn(params, batch):
        if microbatches == 1:
            return micro_loss(params, batch)
        # params ride in the carry: an NNX model must be built at the loop body's trace level.
        _, losses = jax.lax.scan(lambda p, micro: (p, micro_loss(p, micro)), params, split(batch))
        return losses.mean()

    def step_fn(state, batch):
        loss, grads = loss_and_grads(state["params"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return loss_fn, step_fn


def jit_train_step(
    config: ml_collections.ConfigDict,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    state_shardings: Any,
):
    """(loss_fn, train_step): the run's step as `train` jits it (its memory options, the
    state in `state_shardings` and donated, the batch split over the data axes); also what
    `experiments/benchmarks/memory.py` compiles from abstract shapes."""
    loss_fn, step_fn = make_step(
        graphdef,
        tx,
        loss_chunk=resolve_chunk(config.loss_chunk, model_config(config).vocab_size),
        microbatches=config.microbatches,
        mesh=mesh,
    )
    batch_sharding = NamedSharding(mesh, BATCH_SPEC)
    train_step = jax.jit(
        step_fn,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )
    return loss_fn, train_step


def init_state(
    config: ml_collections.ConfigDict,
    model_cfg: ModelConfig,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
) -> tuple[nnx.GraphDef, dict[str, Any], Any]:
    """(graphdef, state, state's shardings): the run's initial state, created directly in
    its sharding (params by the model's logical-axis table)."""
    key = jax.random.key(config.seed)
    abstract_model = nnx.eval_shape(lambda: init_model(model_cfg, key))
    graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
    param_shardings = jax.tree.map(
        lambda s: NamedSharding(mesh, s),
        param_specs(abstract_params),
        is_leaf=lambda x: isinstance(x, P),
    )

    @functools.partial(jax.jit, out_shardings=param_shardings)
    def init_params(key):
        return nnx.state(init_model(model_cfg, key), nnx.Param)

    params = init_params(key)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": jax.jit(tx.init)(params),
    }
    # Optimizer state follows its parameter's sharding (GSPMD propagation through
    # zeros_like); scalars such as step counts are replicated on the mesh.
    replicated = NamedSharding(mesh, P())
    state_shardings = jax.tree.map(
        lambda x: x.sharding if isinstance(x.sharding, NamedSharding) else replicated, state
    )
    return graphdef, jax.device_put(state, state_shardings), state_shardings


class Preemption:
    """SIGTERM → save and stop; `stop()` says when. One process stops after the step in
    which the signal came. Several processes must stop after the same step whichever of
    them got the signal, and when: every step all-reduces their flags (the maximum) and
    reads the result one step later, when it is ready without waiting for the step in
    flight; all processes read the same value of the same step, so they agree."""

    def __init__(self, mesh: jax.sharding.Mesh):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        self._pending = None
        self._multi = jax.process_count() > 1
        if self._multi:
            self._flags = NamedSharding(mesh, P(mesh.axis_names))  # one flag per device
            self._local = len(mesh.local_devices)
            self._any = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))
            self._global_shape = (mesh.size,)

    def _handle(self, *_):
        self.requested = True

    def stop(self) -> bool:
        """Whether to save and stop after the step just dispatched: the same on every
        process (in a multi-process run, SIGTERM's flag as all-reduced a step earlier)."""
        if not self._multi:
            return self.requested
        flags = jax.make_array_from_process_local_data(
            self._flags, np.full(self._local, self.requested), self._global_shape
        )
        agreed, self._pending = self._pending, self._any(flags)
        return agreed is not None and bool(agreed)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        signal.signal(signal.SIGTERM, self._previous)


class _FailTogether:
    """Multi-process runs: an exception on one process ends every process at once.

    XLA's collectives do not notice a peer that left (jax.distributed's heartbeat ends the
    others only after `heartbeat_timeout_seconds`, 100 s by default), and a failed process
    left alone would wait for them in jax.distributed's shutdown barrier. So the failed
    process, after its own cleanup (its finished and in-flight checkpoints are kept), posts
    its error in jax.distributed's key-value store and exits; a thread in every process
    waits on that key and ends its own. A NaN loss is not such an error: the loss is the
    global batch's, so every process stops at the same step and exits normally.
    """

    KEY = "scion_jax/failed"

    def __init__(self):
        # jax has no public accessor for its distributed client (orbax uses this one too).
        from jax._src import distributed

        self._client = distributed.global_state.client
        if self._client is None:
            raise RuntimeError("A multi-process run needs jax.distributed.initialize() first.")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _watch(self):
        while not self._done.is_set():
            try:
                message = self._client.blocking_key_value_get(self.KEY, 1000)
            except jax.errors.JaxRuntimeError as e:
                if "DEADLINE_EXCEEDED" in str(e):
                    continue
                logging.warning("Stopped watching for failed processes: %s", e)
                return
            _exit_now(f"Ending this process: another one failed ({message}).")

    def __exit__(self, kind, error, tb):
        self._done.set()
        self._thread.join()
        if error is None or isinstance(error, FloatingPointError):
            return  # returns, or raises on every process alike
        logging.error("".join(traceback.format_exception(kind, error, tb)))
        try:
            self._client.key_value_set(
                self.KEY, f"process {jax.process_index()}: {type(error).__name__}: {error}"
            )
        except jax.errors.JaxRuntimeError:
            pass  # another process failed first and posted its error
        _exit_now(f"Ending process {jax.process_index()} after the error above.")


def _exit_now(message: str) -> None:
    """Exits with code 1 without Python's or jax.distributed's shutdown (whose barrier would
    wait for the processes still running)."""
    logging.error(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir`; returns the last logged metrics row,
    with ``"preempted": True`` if SIGTERM stopped it early (after saving).

    In a multi-process run, SIGTERM to any of the processes stops them all after the same
    step, with one checkpoint; an exception on one process ends them all, each with exit
    code 1 (`_FailTogether`), instead of propagating; a NaN loss raises on every process.
    """
    mesh = make_mesh(config)
    with Preemption(mesh) as preemption:  # a SIGTERM while compiling counts too
        if jax.process_count() == 1:
            return _train(config, workdir, mesh, preemption)
        with _FailTogether():
            return _train(config, workdir, mesh, preemption)


def _train(
    config: ml_collections.ConfigDict,
    workdir: str,
    mesh: jax.sharding.Mesh,
    preemption: Preemption,
) -> dict[str, Any]:
    model_cfg = model_config(config)
    rules = model_rules(config, model_cfg)
    tx = make_optimizer(config, model_cfg, mesh)
    schedule = make_schedule(config)
    is_main = jax.process_index() == 0
    workdir = os.path.abspath(workdir)  # orbax needs absolute paths
    os.makedirs(workdir, exist_ok=True)

    graphdef, state, state_shardings = init_state(config, model_cfg, tx, mesh)
    batch_sharding = NamedSharding(mesh, BATCH_SPEC)

    loss_fn, train_step = jit_train_step(config, graphdef, tx, mesh, state_shardings)
    eval_loss = jax.jit(loss_fn, in_shardings=(state_shardings["params"], batch_sharding))
    norms_fn = jax.jit(
        norm_logger(rules, tuple(config.norm_extra), power_iters=config.norm_power_iters or None)
    )
    copy_params = jax.jit(lambda p: jax.tree.map(jnp.copy, p))  # survives the donated step

    # --- data, checkpoints, resume ---
    train_iter = data_lib.make_train_iterator(
        config.data,
        seq_len=config.seq_len,
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        num_steps=config.steps,  # with data.num_epochs set: fail now if the run would repeat data
    )
    def held_out(num_batches: int, spread: bool = False) -> list:
        return [
            _global_batch(_process_slice(b), batch_sharding)
            for b in data_lib.make_eval_batches(
                config.data,
                seq_len=config.seq_len,
                batch_size=config.batch_size,
                num_batches=num_batches,
                spread=spread,
            )
        ]

    eval_sets = {"eval_loss": held_out(config_lib.eval_batch_count(config))}
    if config.eval_spread_sequences:
        spread_batches = config_lib.eval_batch_count(config, "eval_spread_sequences")
        eval_sets["eval_spread_loss"] = held_out(spread_batches, spread=True)
    keep_steps = tuple(config.keep_steps)
    checkpoints = Checkpoints(
        os.path.join(workdir, "checkpoints"),
        config.keep_checkpoints,
        config.keep_every,
        keep_steps,
    )
    restored = checkpoints.restore_latest(abstract_like(state), train_iter)
    if restored is None and config.branch.workdir:
        restored = _branch_start(config.branch, workdir, abstract_like(state), train_iter)
    start = 0
    if restored is not None:
        start, state = restored
        logging.info("Resumed from the checkpoint at step %d.", start)
    writer = MetricsWriter(workdir, resume_step=start if restored else None, enabled=is_main)
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    tokens_per_step = config.batch_size * config.seq_len
    flops_per_step = model_flops_per_token(model_cfg, config.seq_len) * tokens_per_step

    def evaluate(params) -> dict[str, float]:
        """The mean loss on each held-out set, by metric name."""
        return {
            name: float(np.mean([eval_loss(params, b) for b in batches]))
            for name, batches in eval_sets.items()
        }

    log_device = norm_log_device(mesh)

    def norm_metrics(params, prev=None) -> dict[str, float]:
        """Parameter norms, and the update's (ΔW over the step) given `prev`."""
        if log_device is not None:
            params, prev = jax.device_put((params, prev), log_device)
        norms = {k: float(v) for k, v in norms_fn(params, prev).items()}
        norms["output_norm"] = norms["rms_to_inf/unembed/kernel"]
        return norms

    row: dict[str, Any] = {}
    if start == 0:
        row = {"step": 0, "tokens": 0, "lr": float(schedule(0)), **norm_metrics(state["params"])}
        row.update(evaluate(state["params"]))
        writer.write(row)
        checkpoints.save(0, state, train_iter)

    bar = tqdm(
        total=config.steps, initial=start, disable=not is_main, unit="step", dynamic_ncols=True
    )
    last_time, last_step = time.perf_counter(), start
    try:
        for step in range(start + 1, config.steps + 1):
            batch = _global_batch(next(train_iter), batch_sharding)
            norm = step % config.norm_every == 0 or step == config.steps
            prev = copy_params(state["params"]) if norm and config.norm_updates else None
            state, metrics = train_step(state, batch)
            stop = preemption.stop() and step < config.steps  # in the last step: finished
            log = step % config.log_every == 0 or step == config.steps
            evaluate_now = step % config.eval_every == 0 or step == config.steps
            save = step % config.checkpoint_every == 0 or step == config.steps or step in keep_steps
            if log or norm or evaluate_now or save or stop:
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"Loss is {loss} at step {step}; stopped. The last good checkpoint "
                        f"(step {checkpoints.manager.latest_step()}) is kept in {workdir}."
                    )
                now = time.perf_counter()
                tps = (step - last_step) * tokens_per_step / (now - last_time)
                last_time, last_step = now, step
                row = {
                    "step": step,
                    "tokens": step * tokens_per_step,
                    "loss": loss,
                    "lr": float(schedule(step - 1)),
                    "tokens_per_s": tps,
                    "grad_norm": float(metrics["grad_norm"]),
                    "epoch": train_iter.epoch,
                }
                row["model_flops_per_s"] = tps / tokens_per_step * flops_per_step
                if norm:
                    row.update(norm_metrics(state["params"], prev))
                    prev = None
                if evaluate_now:
                    row.update(evaluate(state["params"]))
                writer.write(row)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
            bar.update(1)
            if save or stop:
                checkpoints.save(step, state, train_iter)
            if stop:
                logging.warning("SIGTERM: saved the checkpoint at step %d; rerun to resume.", step)
                row = {**row, "preempted": True}
                break
    finally:
        bar.close()
        checkpoints.wait()
        checkpoints.close()
        writer.close()
    if is_main:
        plot_summary(writer.path, os.path.join(workdir, "summary.png"))
    return row


def _branch_start(branch: ml_collections.ConfigDict, workdir: str, abstract_state, train_iter):
    """(step, state) of another run's checkpoint at `branch.step`; `train_iter` continues
    from that run's data position, so the branch sees the batches the run saw next."""
    directory = os.path.join(workdir, branch.workdir, "checkpoints")  # relative: to workdir
    parent = Checkpoints(directory, read_only=True)
    try:
        state = parent.restore(branch.step, abstract_state, train_iter)
    finally:
        parent.close()
    logging.info("Branching from %s at step %d.", branch.workdir, branch.step)
    return branch.step, state


def _process_slice(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """This process's rows of a global batch (eval batches are built whole everywhere)."""
    n, i = jax.process_count(), jax.process_index()
    rows = next(iter(batch.values())).shape[0] // n
    return {k: v[i * rows : (i + 1) * rows] for k, v in batch.items()}

"""Run outputs: `metrics.jsonl`, TensorBoard events, `summary.png`, and the norm log.

`metrics.jsonl` has one JSON object per logged step. On resume, rows past the restored
checkpoint (logged before a kill, about to be recomputed) are dropped, so a resumed run's
file has the same rows as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone
from tensorboardX import SummaryWriter

from scion_jax.analysis.collect import atomic_write_text
from scion_jax.norms import ROLE, layer_norms
from scion_jax.rules import Rules, path_str, resolve_roles
from scion_jax.train.optim import GROUP_OF_NORM


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a metrics file; a torn last line (a kill mid-write) is ignored."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


class MetricsWriter:
    """Appends rows to `<workdir>/metrics.jsonl` and scalars to TensorBoard."""

    def __init__(self, workdir: str, resume_step: int | None, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        if not enabled:
            return
        kept = [
            r for r in read_rows(self.path) if resume_step is not None and r["step"] <= resume_step
        ]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(self.path, "a")  # noqa: SIM115 - held open for the run
        purge = None if resume_step is None else resume_step + 1
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()


def plot_summary(metrics_path: str, png_path: str) -> None:
    """Loss (train, eval) and the output norm ‖W_out‖_{RMS→∞} against tokens."""
    rows = read_rows(metrics_path)
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_norm = fig.subplots(1, 2)
    curves = (("loss", "train"), ("eval_loss", "held-out"), ("eval_spread_loss", "held-out spread"))
    for key, label in curves:
        pts = [(r["tokens"], r[key]) for r in rows if key in r]
        if pts:
            ax_loss.plot(*zip(*pts), label=label, marker=None if key == "loss" else ".")
    ax_loss.set(xlabel="tokens", ylabel="loss (nats/token)", title="Loss")
    ax_loss.legend()
    pts = [(r["tokens"], r["output_norm"]) for r in rows if "output_norm" in r]
    if pts:
        ax_norm.plot(*zip(*pts), marker=".")
    ax_norm.set(yscale="log", xlabel="tokens", ylabel="‖W_out‖ RMS→∞", title="Output-layer norm")
    for ax in (ax_loss, ax_norm):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


def norm_logger(
    rules: Rules, extra: Sequence[str] = (), *, power_iters: int | None = None
) -> Callable[[Any, Any], dict[str, jax.Array]]:
    """fn(params, prev_params=None) -> the norm log (Disco's track_param / track_update).

    Keys: ``f"{norm}/{path}"`` for each parameter in its role's norm and in each `extra`
    norm (e.g. "supremum", "condition_number"; stacked matrices get ``/{i}``);
    ``f"norm_{group}/max"`` and ``/mean`` over a group's role norms (input: l1_to_rms,
    output: rms_to_inf, hidden: the rest). Given the parameters before the step, the
    same for the update ΔW = W − W_prev under ``"update/"`` (ΔW = −η·s·(ρ·LMO + λ·W), so
    with λ = 0 its role norm is η·s·ρ).
    """

    def group_summary(norms: dict[str, jax.Array], params: Any) -> dict[str, jax.Array]:
        roles = resolve_roles(params, rules)
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        groups: dict[str, list[jax.Array]] = {}
        for (path, _), role in zip(flat, jax.tree.structure(params).flatten_up_to(roles)):
            if role.norm == "none":
                continue
            key = f"{role.norm}/{path_str(path)}"
            values = [v for k, v in norms.items() if k == key or k.startswith(key + "/")]
            groups.setdefault(GROUP_OF_NORM.get(role.norm, "hidden"), []).extend(values)
        out = {}
        for group, values in groups.items():
            stacked = jnp.stack(values)
            out[f"norm_{group}/max"] = jnp.max(stacked)
            out[f"norm_{group}/mean"] = jnp.mean(stacked)
        return out

    def log(tree: Any) -> dict[str, jax.Array]:
        norms = layer_norms(tree, rules, (ROLE, *extra), power_iters=power_iters)
        return {**norms, **group_summary(norms, tree)}

    def fn(params: Any, prev: Any = None) -> dict[str, jax.Array]:
        out = log(params)
        if prev is not None:
            delta = jax.tree.map(
                lambda w, p: w.astype(jnp.float32) - p.astype(jnp.float32), params, prev
            )
            out |= {f"update/{k}": v for k, v in log(delta).items()}
        return out

    return fn


def norm_log_device(mesh: jax.sharding.Mesh) -> jax.Device | None:
    """Where the trainer computes the norm log: one device when the mesh's devices are one
    process's CPU devices (they share the host's cores, so the log replicated on each ran
    2.4–3.2× slower with 2 devices on 2 cores), else None (where the parameters are)."""
    devices = list(mesh.devices.flat)
    kinds = {(d.platform, d.process_index) for d in devices}
    return devices[0] if kinds == {("cpu", jax.process_index())} and len(devices) > 1 else None

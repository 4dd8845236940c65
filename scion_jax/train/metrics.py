"""Run outputs: `metrics.jsonl`, TensorBoard events, and `summary.png`.

`metrics.jsonl` has one JSON object per logged step. On resume, rows past the restored
checkpoint (logged before a kill, about to be recomputed) are dropped, so a resumed run's
file has the same rows as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone
from tensorboardX import SummaryWriter

from scion_jax.analysis.collect import atomic_write_text


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
    for key, label in (("loss", "train"), ("eval_loss", "held-out")):
        pts = [(r["tokens"], r[key]) for r in rows if key in r]
        if pts:
            ax_loss.plot(*zip(*pts), label=label, marker="." if key == "eval_loss" else None)
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

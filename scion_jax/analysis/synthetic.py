"""Synthetic sweeps with known optima: ground truth for the analysis (and a demo input).

The model mimics the paper's phenomenology (PAPER.md §6) in closed form:
- output norm (Fig. 1b): log2 N = log2 η + v·log2 B + w·log2 T + c0 + u·log2(d/256),
  growing with tokens T and with η;
- loss (Fig. 1a): a parabola in x = log2 N through the init point (x = 0, loss = ln V)
  with minimum L*(D, B) = Lmin(D) + λ·(log2 B − log2 B*(D))² − g·log2(d/256), where
  log2 B*(D) = e·log2 D − b0 (Fig. 7), and vertex
  x0 = x00 + r·(log2 D − d0) + s·(log2 B − log2 B*(D)): at B*(D) the optimal norm is x00
  for every D and width when r = 0 (norm transfer, Fig. 2; r ≠ 0 makes it rise by r per
  doubling of D), and within a horizon it falls with B for s < 0 (Fig. 2a);
- hence log2 η*(B, D) = α·log2 B + β·log2 D + γ with α = s − v, β = r − s·e − w,
  γ = x00 − r·d0 + s·b0 − c0 (Fig. 3b; width shifts γ by −u·log2(d/256)), and the first η
  reaching norm 2^t obeys log2 η = −v·log2 B − w·log2 D + (t − c0) (Fig. 3a).
Optional LR-scale configurations (Fig. 4) raise L* by μ·Σ (log2 scale − log2 best)².
L* is softly capped below ln V (only at tiny D), so every sweep is an upright parabola.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Truth:
    """Parameters of the synthetic norm / loss model (see the module docstring)."""

    v: float = -0.92
    w: float = 0.71
    c0: float = 0.0
    u: float = 0.3
    x00: float = 7.0
    r: float = 0.0
    d0: float = 30.0
    s: float = -0.3
    lam: float = 0.01
    e: float = 0.5
    b0: float = 7.0
    g: float = 0.1
    mu: float = 0.05
    best_scales: tuple[float, float, float] = (1.0, 0.125, 1.0)
    vocab_size: int = 256

    @property
    def alpha(self) -> float:
        return self.s - self.v

    @property
    def beta(self) -> float:
        return self.r - self.s * self.e - self.w

    @property
    def gamma(self) -> float:
        return self.x00 - self.r * self.d0 + self.s * self.b0 - self.c0

    def log2_b_star(self, log2_d: float) -> float:
        return self.e * log2_d - self.b0

    def log2_norm(self, log2_lr: float, log2_b: float, log2_t: float, width: int = 256) -> float:
        return (log2_lr + self.v * log2_b + self.w * log2_t + self.c0
                + self.u * math.log2(width / 256))

    def x_star(self, log2_b: float, log2_d: float) -> float:
        return (self.x00 + self.r * (log2_d - self.d0)
                + self.s * (log2_b - self.log2_b_star(log2_d)))

    def loss_star(self, log2_d: float, log2_b: float, width: int = 256) -> float:
        lmin = 2.0 + 20.0 * 2.0 ** (-0.15 * log2_d)
        return (lmin + self.lam * (log2_b - self.log2_b_star(log2_d)) ** 2
                - self.g * math.log2(width / 256))

    def penalty(self, scales: Sequence[float]) -> float:
        """Loss added by (input, hidden, output) LR scales away from `best_scales` (Fig. 4)."""
        return self.mu * sum((math.log2(a) - math.log2(b)) ** 2
                             for a, b in zip(scales, self.best_scales, strict=True))

    def loss(self, log2_t: float, log2_b: float, x: float, width: int = 256,
             scales: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
        """Loss after T = 2^log2_t tokens at log2 output norm x (ln V at x = 0)."""
        x0, ln_v = self.x_star(log2_b, log2_t), math.log(self.vocab_size)
        ls = self.loss_star(log2_t, log2_b, width) + self.penalty(scales)
        # Soft cap below ln V (tiny D): keeps the parabola upright, exact when ls ≪ ln V.
        tau = 0.05
        ls = ln_v - tau * np.logaddexp(0.0, (ln_v - ls) / tau)
        return ls + (ln_v - ls) * ((x - x0) / x0) ** 2

    def log2_eta_star(self, log2_b: float, log2_d: float, width: int = 256) -> float:
        return (self.alpha * log2_b + self.beta * log2_d + self.gamma
                - self.u * math.log2(width / 256))


def _config(truth: Truth, log2_lr: float, batch: int, width: int, seq_len: int, steps: int,
            scales: Sequence[float], flat: bool) -> dict:
    nested = {
        "seed": 0, "steps": steps, "batch_size": batch, "seq_len": seq_len,
        "model": {"vocab_size": truth.vocab_size, "d_model": width, "n_layers": 4},
        "optimizer": {"name": "scion", "learning_rate": 2.0**log2_lr, "momentum": 0.0,
                      "weight_decay": 0.0,
                      "lr_scales": dict(zip(("input", "hidden", "output"), scales,
                                            strict=True))},
        "schedule": {"name": "constant"},
    }
    if not flat:
        return nested
    from scion_jax.analysis.collect import flatten  # noqa: PLC0415

    return flatten(nested)


def make_sweep(
    out_dir: str,
    truth: Truth | None = None,
    *,
    log2_lrs: Sequence[float] = tuple(np.arange(-13.0, 0.01, 0.25)),
    batch_sizes: Sequence[int] = (16, 32, 64, 128, 256, 512, 1024),
    widths: Sequence[int] = (256,),
    lr_scales: Sequence[tuple[float, float, float]] = ((1.0, 1.0, 1.0),),
    seq_len: int = 1024,
    max_log2_tokens: int = 32,
    noise: float = 0.0,
    flat_config: bool = True,
    seed: int = 0,
) -> list[str]:
    """Write one run directory per (η, B, width, LR scales) under `out_dir`; return them.

    Each run logs `loss`/`lr` at steps round(2^(j/4)) (so every power of two), the output
    norm at round(2^(j/4)) for even j, and `eval_loss` (loss + 0.05) at powers of two, with a
    step-0 row (norm 1, eval loss ln V) as the trainer writes it. `noise`: std of Gaussian
    noise added to each logged loss.
    """
    truth = truth or Truth()
    rng = np.random.default_rng(seed)
    dirs = []
    for log2_lr in log2_lrs:
        for batch in batch_sizes:
            log2_tps = math.log2(batch * seq_len)
            n_log2_steps = max_log2_tokens - int(round(log2_tps))
            steps = 2**n_log2_steps
            sched = sorted({round(2 ** (j / 4)) for j in range(4 * n_log2_steps + 1)})
            norm_steps = {round(2 ** (j / 4)) for j in range(0, 4 * n_log2_steps + 1, 2)}
            for width in widths:
                for scales in lr_scales:
                    name = (f"lr{log2_lr:+.2f}_b{batch}_d{width}_s"
                            + "-".join(f"{x:g}" for x in scales))
                    run = os.path.join(out_dir, name)
                    os.makedirs(run, exist_ok=True)
                    cfg = _config(truth, float(log2_lr), batch, width, seq_len, steps, scales,
                                  flat_config)
                    with open(os.path.join(run, "config.json"), "w") as f:
                        json.dump(cfg, f, indent=1)
                    lr = 2.0**log2_lr
                    lines = [{"step": 0, "tokens": 0, "lr": lr, "output_norm": 1.0,
                              "eval_loss": math.log(truth.vocab_size)}]
                    for step in sched:
                        log2_t = math.log2(step) + log2_tps
                        x = truth.log2_norm(float(log2_lr), math.log2(batch), log2_t, width)
                        loss = truth.loss(log2_t, math.log2(batch), x, width, scales)
                        row = {"step": step, "tokens": step * batch * seq_len,
                               "loss": loss + noise * float(rng.normal()), "lr": lr}
                        if step in norm_steps:
                            row["output_norm"] = 2.0**x
                        if step & (step - 1) == 0:  # powers of two
                            row["eval_loss"] = loss + 0.05
                        lines.append(row)
                    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
                        f.writelines(json.dumps(r) + "\n" for r in lines)
                    dirs.append(run)
    return dirs

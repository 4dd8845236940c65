"""Predicting η* for an unseen (B, D) from a finished sweep via the iso-norm relation.

Beyond the paper: its findings say *where* the optimum sits (at the optimal output norm,
PAPER.md §6.2) and *how* the norm a run reaches depends on (η, B, D) (Fig. 1b, 3a). Both are
near-linear in log2 space, so η* follows by solving one for the other:
  1. optimal norm   x*(B, D)        ≈ a·log2 B + b·log2 D + c        (fit over the optima)
  2. reached norm   log2 N(η, B, D) ≈ u·log2 η + v·log2 B + w·log2 D + z
                                      (fit over runs near their sweep's optimum)
  3. log2 η*(B, D) = (x*(B, D) − v·log2 B − w·log2 D − z) / u.
`leave_one_out` and `predict_held_out` (e.g. a whole batch size) check it against the sweep's
own optima, beside the global power law log2 η* = α·log2 B + β·log2 D + γ (Fig. 3b) fitted
on the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from scion_jax.analysis.fits import Optimum, fit_global
from scion_jax.analysis.regression import LinearFit, linear_fit

Row = dict[str, Any]


def _key(log2_b: float, log2_d: float) -> tuple[float, float]:
    return round(log2_b, 6), round(log2_d, 6)


def norm_laws(table: Sequence[Row], optima: Sequence[Optimum], *,
              window: float = 1.5) -> tuple[LinearFit, LinearFit]:
    """(optimal-norm fit x*(B, D), reached-norm fit log2 N(η, B, D)) from one sweep setup."""
    ok = [o for o in optima if o.ok]
    x_fit = linear_fit(np.array([[o.log2_B, o.log2_D, 1.0] for o in ok]).reshape(-1, 3),
                       np.array([o.x_star for o in ok]), ("a", "b", "c"))
    star = {_key(o.log2_B, o.log2_D): o.x_star for o in ok}
    rows = [r for r in table
            if abs(r["log2_norm"] - star.get(_key(r["log2_B"], r["log2_D"]), math.inf)) <= window
            and all(math.isfinite(r[k]) for k in ("log2_lr", "log2_B", "log2_D", "log2_norm"))]
    n_fit = linear_fit(
        np.array([[r["log2_lr"], r["log2_B"], r["log2_D"], 1.0] for r in rows]).reshape(-1, 4),
        np.array([r["log2_norm"] for r in rows]), ("u", "v", "w", "z"))
    return x_fit, n_fit


def predict_log2_eta(x_fit: LinearFit, n_fit: LinearFit, log2_b: float, log2_d: float) -> float:
    """log2 η* at (B, D) where the reached norm equals the optimal norm (step 3 above)."""
    x_star = x_fit["a"] * log2_b + x_fit["b"] * log2_d + x_fit["c"]
    return (x_star - n_fit["v"] * log2_b - n_fit["w"] * log2_d - n_fit["z"]) / n_fit["u"]


def predict_optima(table: Sequence[Row], optima: Sequence[Optimum], targets: Sequence[Optimum],
                   *, window: float = 1.5) -> list[dict[str, float]]:
    """η* of each target optimum (fitted ones only) predicted from `table` and `optima` by the
    iso-norm relation and by the global power law, beside its measured (interpolated) η*."""
    x_fit, n_fit = norm_laws(table, optima, window=window)
    power = fit_global(optima, eta="log2_eta_interp")
    return [{
        "log2_B": o.log2_B, "log2_D": o.log2_D, "log2_eta_measured": o.log2_eta_interp,
        "log2_eta_iso_norm": predict_log2_eta(x_fit, n_fit, o.log2_B, o.log2_D),
        "log2_eta_power_law": float(power.predict([o.log2_B, o.log2_D, 1.0])),
    } for o in targets if o.ok]


def predict_held_out(table: Sequence[Row], optima: Sequence[Optimum],
                     is_held: Callable[[float, float], bool], *,
                     window: float = 1.5) -> list[dict[str, float]]:
    """`predict_optima` for every optimum with `is_held(log2 B, log2 D)`, from the other
    optima and rows only. E.g. hold out one batch size to test extrapolation in B."""
    held = [o for o in optima if is_held(o.log2_B, o.log2_D)]
    rest_optima = [o for o in optima if not is_held(o.log2_B, o.log2_D)]
    rest_rows = [r for r in table if not is_held(r["log2_B"], r["log2_D"])]
    return predict_optima(rest_rows, rest_optima, held, window=window)


def leave_one_out(table: Sequence[Row], optima: Sequence[Optimum], *,
                  window: float = 1.5) -> list[dict[str, float]]:
    """`predict_held_out` for each (B, D) optimum in turn, the rest of the sweep fitting."""
    out = []
    for o in (o for o in optima if o.ok):
        key = _key(o.log2_B, o.log2_D)
        out += predict_held_out(table, optima, lambda b, d, key=key: _key(b, d) == key,
                                window=window)
    return out

"""Norm transfer across horizons: the optimal output norm at B*(D) with error bars, and
whether it stops moving with D (PAPER.md §6.2, Fig. 2a: 2^(7.0 ± 0.2) for D = 2^29…2^37).

Error bars come from refitting: every (seed, k) pair gives one estimate of each horizon's
optimum, from `fit_optima` with the k points nearest the empirical minimum on that seed's
table. A seed's table is the base seed's, with the rows of every (η, B, D) it repeated
replaced by its own (studies repeat only the runs near each optimum), so the spread over
seeds is the run-to-run noise where it matters and the spread over k the fit's sensitivity.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from scion_jax.analysis.collect import BATCH_KEY, Row
from scion_jax.analysis.fits import GROUP_KEYS, best_per_horizon, by_setup, fit_optima

SEED_KEY = "seed"


def _point(row: Row) -> tuple:
    """What a run is, seed aside: its setup, B, D and η."""
    return tuple(row.get(k) for k in GROUP_KEYS) + (row.get("log2_lr"),)


def seed_tables(table: Sequence[Row]) -> dict[Any, list[Row]]:
    """{seed: the table as seen by that seed}: the lowest seed's rows, each replaced by the
    same (setup, B, D, η) row of `seed` where that seed ran it."""
    seeds = sorted({r.get(SEED_KEY) for r in table}, key=lambda s: (s is None, s))
    base = [r for r in table if r.get(SEED_KEY) == seeds[0]]
    out = {}
    for seed in seeds:
        own = {_point(r): r for r in table if r.get(SEED_KEY) == seed}
        out[seed] = [own.get(_point(r), r) for r in base]
    return out


def base_seed_table(table: Sequence[Row]) -> list[Row]:
    """The lowest seed's rows: what one fit per (setup, B, D) is made from. Studies repeat
    only the runs near each optimum with other seeds; pooling those repeats into the fits
    would weigh the B that were repeated more, so other seeds give error bars only."""
    return next(iter(seed_tables(table).values())) if table else []


def horizon_estimates(table: Sequence[Row], *, ks: Sequence[int] = (5, 7, 9),
                      vocab_size: int | None = None, loss_key: str = "loss") -> list[dict]:
    """Per horizon D of the primary setup (the one with the most optima): B*(D), the optimal
    log2 norm, η* and loss* of every (seed, k) estimate, and their summary.

    Each row: ``log2_D``; ``b_star`` (the B most estimates pick; ``b_star_votes`` how many of
    ``n`` do); ``x_star`` / ``x_lo`` / ``x_hi`` / ``x_std``: mean, min, max, std of the optimal
    log2 norm at each estimate's own B*; ``log2_eta_star`` (mean, interpolated at the
    vertex) and ``loss_star`` (mean); ``in_range``: every estimate's vertex lies within its
    fitted points (not extrapolated, not on a grid edge).
    """
    per_d: dict[float, list] = {}
    for seed_table in seed_tables(table).values():
        for k in ks:
            optima = fit_optima(seed_table, vocab_size=vocab_size, k=k, loss_key=loss_key)
            if not optima:
                continue
            primary = next(iter(by_setup(optima).values()))
            for o in best_per_horizon(primary):
                per_d.setdefault(o.log2_D, []).append(o)
    rows = []
    for log2_d in sorted(per_d):
        est = per_d[log2_d]
        x = np.array([o.x_star for o in est])
        votes = Counter(o.batch_size for o in est)
        b_star, n_votes = votes.most_common(1)[0]
        rows.append({
            "log2_D": log2_d, "b_star": b_star, "b_star_votes": n_votes, "n": len(est),
            "x_star": float(x.mean()), "x_lo": float(x.min()), "x_hi": float(x.max()),
            "x_std": float(x.std()),
            "log2_eta_star": float(np.mean([o.log2_eta_interp for o in est])),
            "loss_star": float(np.mean([o.loss_star for o in est])),
            "in_range": all(o.in_range for o in est),
        })
    return rows


def longest_plateau(rows: Sequence[dict], *, tol: float = 0.3) -> dict[str, Any]:
    """The longest run of consecutive horizons whose optimal log2 norms all lie within ±tol
    of one value (max − min ≤ 2·tol): ``start`` / ``end`` log2 D, ``n`` horizons, ``centre``;
    of equally long runs the one at the longest horizons (where the claim is tested).
    An extrapolated optimum (``in_range`` False) ends a run: its norm is not measured.
    """
    best = {"start": math.nan, "end": math.nan, "n": 0, "centre": math.nan}
    xs = [r["x_star"] for r in rows]
    for i in range(len(rows)):
        for j in range(i, len(rows)):
            window = xs[i : j + 1]
            if not rows[j].get("in_range", True) or max(window) - min(window) > 2 * tol:
                break
            if j - i + 1 >= best["n"]:
                best = {"start": rows[i]["log2_D"], "end": rows[j]["log2_D"], "n": j - i + 1,
                        "centre": (max(window) + min(window)) / 2}
    return best


def width_check(table: Sequence[Row], key: str = "model.d_model", *, k: int = 7,
                vocab_size: int | None = None, loss_key: str = "loss") -> list[dict]:
    """Optimal log2 norms of every setup that differs from the primary in `key` only, at the
    (B, D) both have fitted: [{log2_D, batch_size, key value: x*, …}], for Fig. 2b checks."""
    optima = fit_optima(table, vocab_size=vocab_size, k=k, loss_key=loss_key)
    setups = by_setup(optima)
    if not setups:
        return []
    primary = next(iter(setups))
    rest = {k: v for k, v in primary if k != key}
    siblings = [s for s in setups if {k: v for k, v in s if k != key} == rest]
    found: dict[tuple, dict] = {}
    for setup in siblings:
        for o in setups[setup]:
            if o.ok:
                found.setdefault((o.log2_D, o.batch_size), {})[dict(setup)[key]] = o.x_star
    return [{"log2_D": d, BATCH_KEY: b, **xs} for (d, b), xs in sorted(found.items())
            if len(xs) > 1]

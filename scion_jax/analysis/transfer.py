"""Norm transfer across horizons (PAPER.md §6.2, Fig. 2a: 2^(7.0 ± 0.2) for D = 2^29…2^37):
the optimal output norm at B*(D), its slope over log2 D, and the verdict of the decision rule
in experiments/results/REPORT.md ("Decision rule for the plateau study").

Per horizon D, on one seed's runs of one setup: each B's optimum (`fits.fit_optima`, the
paper's parabola in log2 output norm, PAPER.md §5); B*(D) continuous, the vertex of a
parabola in log2 B through the per-B loss optima, with its standard error; the optimal norm
read at it, interpolated linearly in log2 B between the per-B optimal norms; the discrete B*
(the B of lowest loss*) beside it. Optima whose lowest measured loss is at the η grid's edge
(`Optimum.eta_edge`) and horizons whose B* is at the edge of the B left are marked and left out
of every fit unless `include_edges`. Error bars come from a bootstrap of the evaluation
residuals (`bootstrap`); seeds are fitted independently, each on its own runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scion_jax.analysis.collect import BATCH_KEY, Row
from scion_jax.analysis.fits import Optimum, by_setup, fit_optima, fit_parabola
from scion_jax.analysis.regression import line_fit

SEED_KEY = "seed"
PLATEAU_MAX = 0.1  # the decision rule's thresholds, log2 norm per doubling of D
RISING_MIN = 0.2
N_LONGEST = 3  # the verdict's slope is over this many of the longest horizons left


def seed_tables(table: Sequence[Row]) -> dict[Any, list[Row]]:
    """{seed: that seed's own rows}, lowest seed first: each seed is fitted on its own runs
    only (a seed that repeats a few runs is not filled in with another seed's)."""
    seeds = sorted({r.get(SEED_KEY) for r in table}, key=lambda s: (s is None, s))
    return {s: [r for r in table if r.get(SEED_KEY) == s] for s in seeds}


def primary_optima(table: Sequence[Row], *, k: int = 7, loss_key: str = "loss",
                   free_c: bool = False, vocab_size: int | None = None) -> list[Optimum]:
    """The per-(D, B) optima of the setup with the most of them. The fixed-c fit needs ln V
    (`vocab_size`, else the table's `model.vocab_size`): a ValueError says so when asked
    for (`free_c` False) without it, so that fixed-c and free-c never silently coincide."""
    optima = fit_optima(table, vocab_size=vocab_size, k=k, loss_key=loss_key, free_c=free_c)
    optima = next(iter(by_setup(optima).values()), [])
    if not free_c and any(o.fit is not None and not o.fit.fixed_c for o in optima):
        raise ValueError("the fixed-c fit needs the vocabulary size (c = ln V): the table has "
                         "no model.vocab_size; pass vocab_size=")
    return optima


def counted(o: Optimum, include_edges: bool = False) -> bool:
    """Whether an optimum counts in B*(D) and the fits: it has a minimum and, unless
    `include_edges`, its lowest measured loss is not at the η grid's edge."""
    return o.ok and (include_edges or not o.eta_edge)


def _vertex(u: np.ndarray, loss: np.ndarray) -> tuple[float, float, float]:
    """(vertex, its standard error, loss at it) of the parabola in u through every point;
    NaN vertex without a minimum, NaN error without residual degrees of freedom. The error
    is the delta method's: ∇(−b/2a) = (b/2a², −1/2a, 0) through cov = σ²·(XᵀX)⁻¹."""
    fit = fit_parabola(u, loss, k=len(u))
    if not fit.has_minimum:
        return math.nan, math.nan, math.nan
    se = math.nan
    if len(u) > 3:
        X = np.stack([u**2, u, np.ones_like(u)], 1)
        resid = loss - fit(u)
        cov = float(resid @ resid) / (len(u) - 3) * np.linalg.inv(X.T @ X)
        g = np.array([fit.b / (2 * fit.a**2), -1 / (2 * fit.a), 0.0])
        se = math.sqrt(max(float(g @ cov @ g), 0.0))
    return fit.x_star, se, fit.loss_star


def b_star(optima: Sequence[Optimum], *, include_edges: bool = False) -> dict[str, Any]:
    """B*(D) of one horizon's per-B optima: `b_star` (discrete: lowest loss*),
    `log2_b_star` ± `log2_b_star_se` (the vertex in log2 B), `x_star` (the optimal log2
    norm interpolated at it; `x_discrete` at the discrete B*), `loss_star`, `log2_eta_star`
    (interpolated like x), `batch_sizes` used, and `b_edge`: why B* is not measured inside
    the B left ("" if it is)."""
    ok = sorted((o for o in optima if counted(o, include_edges)), key=lambda o: o.batch_size)
    row: dict[str, Any] = {"b_star": math.nan, "log2_b_star": math.nan,
                           "log2_b_star_se": math.nan, "x_star": math.nan,
                           "x_discrete": math.nan, "loss_star": math.nan,
                           "log2_eta_star": math.nan, "batch_sizes": [o.batch_size for o in ok]}
    if not ok:
        return {**row, "b_edge": "no B left"}
    best = min(ok, key=lambda o: o.loss_star)
    row.update(b_star=best.batch_size, x_discrete=best.x_star)
    edge = ""
    if len(ok) > 1 and best in (ok[0], ok[-1]):  # the B left: η-edge B do not bracket it
        edge = f"lowest loss at the {'smallest' if best is ok[0] else 'largest'} B left"
    if len(ok) < 3:
        return {**row, "b_edge": edge or f"{len(ok)} B left (3 needed)"}
    u = np.array([o.log2_B for o in ok])
    vertex, se, loss = _vertex(u, np.array([o.loss_star for o in ok]))
    if not math.isfinite(vertex):
        return {**row, "b_edge": edge or "no minimum in log2 B"}
    if not u[0] <= vertex <= u[-1]:
        edge = edge or "vertex outside the B left"
    row.update(log2_b_star=vertex, log2_b_star_se=se, loss_star=loss,
               x_star=float(np.interp(vertex, u, [o.x_star for o in ok])),
               log2_eta_star=float(np.interp(vertex, u, [o.log2_eta_interp for o in ok])))
    return {**row, "b_edge": edge}


def horizon_curve(optima: Sequence[Optimum], *, include_edges: bool = False) -> list[dict]:
    """Per horizon D (ascending): `b_star`'s row, `used` (it counts in the fits: no B edge,
    unless `include_edges`, and an optimal norm) and `per_b`, each B's optimum with its
    `eta_edge` and `in_range` marks."""
    rows = []
    for d in sorted({o.log2_D for o in optima}):
        at_d = sorted((o for o in optima if o.log2_D == d), key=lambda o: o.batch_size)
        row = {"log2_D": d, **b_star(at_d, include_edges=include_edges)}
        row["used"] = bool((include_edges or not row["b_edge"]) and math.isfinite(row["x_star"]))
        row["per_b"] = [{BATCH_KEY: o.batch_size, "x_star": o.x_star, "loss_star": o.loss_star,
                         "log2_eta_star": o.log2_eta_interp, "eta_edge": o.eta_edge,
                         "in_range": o.in_range, "ok": o.ok} for o in at_d]
        rows.append(row)
    return rows


def longest_used(curve: Sequence[dict], n: int = N_LONGEST) -> list[dict]:
    """The n longest horizons that count in the fits."""
    return [r for r in curve if r["used"]][-n:]


def slope(rows: Sequence[dict]) -> float:
    """Least-squares slope of the optimal norm `x_star` against log2 D (per doubling); NaN
    below 2 horizons."""
    if len(rows) < 2:
        return math.nan
    return line_fit([r["log2_D"] for r in rows], [r["x_star"] for r in rows])["slope"]


def bootstrap(optima: Sequence[Optimum], horizons: Sequence[float], *, n_draws: int = 2000,
              seed: int = 0, include_edges: bool = False) -> dict[str, Any]:
    """Replicates of the optimal norm at B*(D) and of its slope over `horizons`, from the
    evaluation residuals: every counted (D, B) parabola refitted (same points, same c) to
    its fitted values plus residuals drawn with replacement from that horizon's pool (the
    counted fits' residuals, each scaled by √(n/(n − p)) for the p coefficients it fitted,
    centred), B*(D) and the optimal norm recomputed. Marks (η edges) stay those of the
    measured losses. A horizon without residual degrees of freedom has no replicates (NaN).

    Returns `x` {log2_D: replicates}, `slope` (replicates over `horizons`, NaN where a
    replicate lost a horizon's optimum) and `n_draws`."""
    fitted = [o for o in optima if counted(o, include_edges)]
    pools: dict[float, list[np.ndarray]] = {}
    for o in fitted:
        x, y, p = np.array(o.fit.x), np.array(o.fit.y), 2 if o.fit.fixed_c else 3
        if len(x) > p:
            pools.setdefault(o.log2_D, []).append((y - o.fit(x)) * math.sqrt(len(x) / (len(x) - p)))
    pool = {d: np.concatenate(r) - np.concatenate(r).mean() for d, r in pools.items()}
    rng = np.random.default_rng(seed)
    lost = np.full(n_draws, math.nan)
    draws: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(optimum) → (x*, loss*) per draw
    for o in fitted:
        if o.log2_D not in pool:
            draws[id(o)] = (lost, lost)
            continue
        x = np.array(o.fit.x)
        y = o.fit(x) + rng.choice(pool[o.log2_D], (n_draws, len(x)))
        cols = [x**2, x] if o.fit.fixed_c else [x**2, x, np.ones_like(x)]
        coef = (y - (o.fit.c if o.fit.fixed_c else 0.0)) @ np.linalg.pinv(np.stack(cols, 1)).T
        a, b = coef[:, 0], coef[:, 1]
        c = np.full(n_draws, o.fit.c) if o.fit.fixed_c else coef[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            draws[id(o)] = (np.where(a > 0, -b / (2 * a), np.nan),
                            np.where(a > 0, c - b**2 / (4 * a), np.nan))
    xs = {d: np.full(n_draws, math.nan) for d in sorted({o.log2_D for o in optima})}
    slopes = np.full(n_draws, math.nan)
    for i in range(n_draws):
        draw = [dataclasses.replace(o, x_star=float(draws[id(o)][0][i]),
                                    loss_star=float(draws[id(o)][1][i]),
                                    ok=bool(np.isfinite(draws[id(o)][0][i])))
                if id(o) in draws else o for o in optima]
        curve = {r["log2_D"]: r for r in horizon_curve(draw, include_edges=include_edges)}
        for d, r in curve.items():
            xs[d][i] = r["x_star"]
        chosen = [curve[d] for d in horizons]
        if all(math.isfinite(r["x_star"]) for r in chosen):
            slopes[i] = slope(chosen)
    return {"x": xs, "slope": slopes, "n_draws": n_draws}


def decide(s: float, lo: float, hi: float) -> str:
    """The decision rule: plateau if s ≤ 0.1 and its 95% interval [lo, hi] lies below 0.2;
    rising if s ≥ 0.2 and the interval lies above 0.1; otherwise undecided."""
    if s <= PLATEAU_MAX and hi < RISING_MIN:
        return "plateau"
    if s >= RISING_MIN and lo > PLATEAU_MAX:
        return "rising"
    return "undecided"


def projection(curve: Sequence[dict], s: float, lo: float, hi: float, *,
               max_doublings: int = 3) -> dict[str, Any]:
    """Which horizon would decide an undecided slope: s moved on by its change from the
    slope one horizon earlier, per further doubling of D, its interval's width held; the
    first doubling (up to `max_doublings`) at which `decide` gives a verdict (`log2_D`
    None if none does, or without the horizons to measure the change)."""
    used = [r for r in curve if r["used"]]
    out: dict[str, Any] = {"log2_D": None, "verdict": None, "projected_slope": None,
                           "change_per_doubling": None}
    if len(used) < N_LONGEST + 1 or not math.isfinite(s):
        return out
    step = used[-1]["log2_D"] - used[-2]["log2_D"]
    change = (s - slope(used[-N_LONGEST - 1:-1])) / step
    out["change_per_doubling"] = change
    for m in range(1, max_doublings + 1):
        s_m = s + m * change
        v = decide(s_m, s_m - (s - lo), s_m + (hi - s))
        if v != "undecided":
            return {**out, "log2_D": used[-1]["log2_D"] + m, "verdict": v, "projected_slope": s_m}
    return out


def _summary(values: np.ndarray) -> tuple[float, float, int]:
    """(2.5th, 97.5th percentile, number of finite replicates). A replicate without a value
    (a parabola that lost its minimum) counts beyond both bounds: lost draws widen the
    interval (to ±inf past 2.5% of them), never narrow it."""
    finite = np.isfinite(values)
    if not finite.any():
        return math.nan, math.nan, 0
    with np.errstate(invalid="ignore"):  # interpolating next to ±inf gives NaN: that bound is ±inf
        lo = np.percentile(np.where(finite, values, -np.inf), 2.5)
        hi = np.percentile(np.where(finite, values, np.inf), 97.5)
    return float(np.nan_to_num(lo, nan=-np.inf)), float(np.nan_to_num(hi, nan=np.inf)), \
        int(finite.sum())


def read_fit(table: Sequence[Row], *, k: int = 7, loss_key: str = "loss", free_c: bool = False,
             include_edges: bool = False, n_draws: int = 2000, seed: int = 0,
             vocab_size: int | None = None) -> dict[str, Any]:
    """One fit (fixed or free c) of one seed's table: the horizon curve with bootstrap 95%
    intervals (`x_lo`, `x_hi`), the slope over the longest horizons left with its interval,
    the rule's verdict and, if undecided, `decided_by` (`projection`). `optima` is the
    per-(D, B) list (for the scaling fits and figures; not JSON)."""
    optima = primary_optima(table, k=k, loss_key=loss_key, free_c=free_c, vocab_size=vocab_size)
    curve = horizon_curve(optima, include_edges=include_edges)
    chosen = longest_used(curve)
    s = slope(chosen) if len(chosen) == N_LONGEST else math.nan
    boot = bootstrap(optima, [r["log2_D"] for r in chosen], n_draws=n_draws, seed=seed,
                     include_edges=include_edges)
    for r in curve:
        r["x_lo"], r["x_hi"], _ = _summary(boot["x"][r["log2_D"]])
    lo, hi, n_ok = _summary(boot["slope"]) if math.isfinite(s) else (math.nan, math.nan, 0)
    verdict = decide(s, lo, hi)
    out = {"free_c": free_c, "horizons": curve,
           "slope": {"per_doubling": s, "lo": lo, "hi": hi, "n_draws": n_draws,
                     "n_finite": n_ok, "horizons": [r["log2_D"] for r in chosen]},
           "verdict": verdict, "optima": optima}
    if verdict == "undecided":
        out["decided_by"] = projection(curve, s, lo, hi)
    return out


def distinct_ks(table: Sequence[Row], ks: Sequence[int], *, loss_key: str = "loss",
                include_edges: bool = False, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """The fixed-c curve for each k of `ks` that fits a distinct set of points (k = 9 fits
    the same 7 points as k = 7 where every sweep has 7 runs, so it is left out):
    [{k, x: {log2_D: x at B*}, slope}]."""
    out, seen = [], set()
    for k in sorted(ks):
        optima = primary_optima(table, k=k, loss_key=loss_key, vocab_size=vocab_size)
        points = tuple(o.fit.n if o.fit else 0 for o in optima)
        if points in seen:
            continue
        seen.add(points)
        curve = horizon_curve(optima, include_edges=include_edges)
        chosen = longest_used(curve)
        out.append({"k": k, "x": {r["log2_D"]: r["x_star"] for r in curve},
                    "slope": slope(chosen) if len(chosen) == N_LONGEST else math.nan})
    return out


def combine(fixed: dict[str, Any], free: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(verdict, decided_by) of the fixed-c and free-c `read_fit`s: their verdict where they
    agree, else undecided; then the horizon that would decide it, if the projection of every
    undecided fit reaches one verdict that the other fit has or is projected to reach too
    (the later of their horizons); None where the fits decide differently or no projection
    agrees."""
    fits = (fixed, free)
    if fixed["verdict"] == free["verdict"] != "undecided":
        return fixed["verdict"], None
    projected = [f["decided_by"] for f in fits if f["verdict"] == "undecided"]
    if any(p["log2_D"] is None for p in projected):
        return "undecided", None
    reached = {p["verdict"] for p in projected} | {f["verdict"] for f in fits
                                                   if f["verdict"] != "undecided"}
    if len(reached) != 1:
        return "undecided", None
    return "undecided", max(projected, key=lambda p: p["log2_D"])


def read_out(table: Sequence[Row], *, k: int = 7, ks: Sequence[int] = (5, 7, 9),
             loss_key: str = "loss", include_edges: bool = False, n_draws: int = 2000,
             seed: int = 0, vocab_size: int | None = None) -> dict[str, Any]:
    """The decision rule's reading of one seed's table: fixed-c and free-c fits side by side
    (`read_fit`), the verdict and the horizon that would decide it (`combine`) and every
    distinct k's curve."""
    fixed, free = (read_fit(table, k=k, loss_key=loss_key, free_c=c, include_edges=include_edges,
                            n_draws=n_draws, seed=seed, vocab_size=vocab_size)
                   for c in (False, True))
    verdict, decided_by = combine(fixed, free)
    out = {"loss": loss_key, "k": k, "include_edges": include_edges, "verdict": verdict,
           "fixed_c": fixed, "free_c": free,
           "ks": distinct_ks(table, ks, loss_key=loss_key, include_edges=include_edges,
                             vocab_size=vocab_size)}
    if verdict == "undecided":
        out["decided_by"] = decided_by
    return out


def width_check(table: Sequence[Row], key: str = "model.d_model", *, k: int = 7,
                vocab_size: int | None = None, loss_key: str = "loss",
                include_edges: bool = False) -> list[dict]:
    """Optimal log2 norms of every setup that differs from the primary in `key` only, at the
    (B, D) both have fitted (`counted` optima): [{log2_D, batch_size, key value: x*, …}],
    for Fig. 2b checks."""
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
            if counted(o, include_edges):
                found.setdefault((o.log2_D, o.batch_size), {})[dict(setup)[key]] = o.x_star
    return [{"log2_D": d, BATCH_KEY: b, **xs} for (d, b), xs in sorted(found.items())
            if len(xs) > 1]


def seed_pairs(base: Sequence[Row], other: Sequence[Row], *,
               loss_key: str = "loss") -> dict[str, Any]:
    """A further seed read against the base seed at the points both measured, for a seed with
    too few η per B to be fitted on its own: per (B, log2 η, D) the other seed's loss and log2
    output norm minus the base seed's; per (B, D) with ≥ 2 η in both, whether the η of lowest
    loss is the same (`same_best`). Both tables are of one setup (`figures.in_setup`)."""
    def measured(rows: Sequence[Row]) -> dict[tuple, Row]:  # by (B, log2 η, D)
        return {(r[BATCH_KEY], round(r["log2_lr"], 6), r["log2_D"]): r for r in rows
                if math.isfinite(r.get(loss_key, math.nan))}

    mine, theirs = measured(base), measured(other)
    pairs = [{BATCH_KEY: b, "log2_lr": lr, "log2_D": d, "loss_base": mine[b, lr, d][loss_key],
              "d_loss": r[loss_key] - mine[b, lr, d][loss_key],
              "d_log2_norm": r["log2_norm"] - mine[b, lr, d]["log2_norm"]}
             for (b, lr, d), r in theirs.items() if (b, lr, d) in mine]
    pairs.sort(key=lambda p: (p[BATCH_KEY], p["log2_D"], p["log2_lr"]))
    best = []
    for b, d in sorted({(p[BATCH_KEY], p["log2_D"]) for p in pairs}):
        here = [p for p in pairs if (p[BATCH_KEY], p["log2_D"]) == (b, d)]
        if len(here) > 1:
            lr_base = min(here, key=lambda p: p["loss_base"])["log2_lr"]
            lr_other = min(here, key=lambda p: p["loss_base"] + p["d_loss"])["log2_lr"]
            best.append({BATCH_KEY: b, "log2_D": d, "log2_lr_base": lr_base,
                         "log2_lr_other": lr_other, "same_best": lr_base == lr_other})
    return {"loss": loss_key, "pairs": pairs, "best": best}

"""Optimum extraction and scaling fits of the norm-transfer experiments (PAPER.md §5–6).

(a) `fit_optima`: per (D, B) group, loss = a·x² + b·x + c with x = log2 ‖W_out‖_{RMS→∞},
    c fixed at ln V (init: norm 1, loss ln V) or free, on the k points nearest the empirical
    minimum; vertex = optimal log2 norm, η* = LR of the run nearest the vertex (Fig. 1a, 2).
(b) `fit_global`: log2 η* = α·log2 B + β·log2 D + γ (Fig. 3b; paper 0.62, −0.56, 9.8).
(c) `fit_horizon_scaling`: B*(D) ∝ D^e and η*(D) ∝ D^e' (Fig. 7; paper 0.45, −0.28).
(d) `first_reach` / `fit_first_reach`: smallest η reaching a target norm per (D, B);
    log2 η = p·log2 B + q·log2 D + r (Fig. 3a; paper p ≈ 1.5, q ≈ −1).
(e) `lr_scale_ranking`: how often each (input, hidden, output) LR-scale configuration is in
    the top 10% (Fig. 4; paper: 1 : 1/8 : 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from scion_jax.analysis.collect import BATCH_KEY, Row
from scion_jax.analysis.regression import LinearFit, line_fit, linear_fit

LR_SCALE_KEYS = ("optimizer.lr_scales.input", "optimizer.lr_scales.hidden",
                 "optimizer.lr_scales.output")
# What defines one LR sweep (one parabola): the horizon, the batch, and everything held fixed
# while η varies. Keys absent from the table are constant (None).
GROUP_KEYS = ("log2_D", BATCH_KEY, "seq_len", "model.d_model", "model.n_layers",
              "model.vocab_size", "model.compute_dtype", "optimizer.name",
              "optimizer.momentum", "optimizer.weight_decay", "schedule.name", *LR_SCALE_KEYS)
SWEEP_AXES = ("log2_D", BATCH_KEY)  # varied within one setup; the rest of GROUP_KEYS is the setup


@dataclasses.dataclass(frozen=True)
class ParabolaFit:
    """loss ≈ a·x² + b·x + c on `n` points; vertex x* = −b/2a, loss* = c − b²/4a (if a > 0)."""

    a: float
    b: float
    c: float
    fixed_c: bool
    n: int
    x_lo: float  # range of the fitted x
    x_hi: float
    rmse: float
    x: tuple[float, ...] = ()  # the fitted points (for refits: `transfer.bootstrap`)
    y: tuple[float, ...] = ()

    @property
    def has_minimum(self) -> bool:
        return self.a > 0

    @property
    def x_star(self) -> float:
        return -self.b / (2 * self.a) if self.has_minimum else math.nan

    @property
    def loss_star(self) -> float:
        return self.c - self.b**2 / (4 * self.a) if self.has_minimum else math.nan

    @property
    def in_range(self) -> bool:
        return self.has_minimum and self.x_lo <= self.x_star <= self.x_hi

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return self.a * x**2 + self.b * x + self.c

    def near_optimal_width(self, rel_tol: float = 0.01) -> float:
        """Width in log2 norm of the range where the fitted loss is within `rel_tol` of
        loss*: a·(x − x*)² ≤ rel_tol·loss* (PAPER.md §6.7: decay widens it ×4–8, i.e. by
        2–3 in log2). NaN without a minimum."""
        if not self.has_minimum:
            return math.nan
        return 2 * math.sqrt(rel_tol * self.loss_star / self.a)


def nearest_to_min(x: np.ndarray, y: np.ndarray, k: int = 7) -> np.ndarray:
    """Indices of the k points whose x is nearest the x of the lowest y (PAPER.md §5)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    good = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(good) == 0:
        return good
    x0 = x[good[np.argmin(y[good])]]
    order = np.argsort(np.abs(x[good] - x0), kind="stable")
    return np.sort(good[order[:k]])


def fit_parabola(x: np.ndarray, y: np.ndarray, *, c: float | None = None,
                 k: int = 7) -> ParabolaFit:
    """Fit y = a·x² + b·x + c on the k points nearest the empirical minimum (PAPER.md §5).

    With `c` given (ln V: the init point x = 0, loss ln V) only a, b are fitted. Raises
    ValueError with fewer points than free coefficients.
    """
    idx = nearest_to_min(x, y, k)
    xs, ys = np.asarray(x, np.float64)[idx], np.asarray(y, np.float64)[idx]
    p = 2 if c is not None else 3
    if len(xs) < p or len(np.unique(xs)) < p:
        raise ValueError(f"{len(np.unique(xs))} distinct points cannot fit a parabola "
                         f"({'fixed' if c is not None else 'free'} c)")
    if c is not None:
        (a, b), *_ = np.linalg.lstsq(np.stack([xs**2, xs], 1), ys - c, rcond=None)
        cc = float(c)
    else:
        (a, b, cc), *_ = np.linalg.lstsq(np.stack([xs**2, xs, np.ones_like(xs)], 1), ys,
                                         rcond=None)
    resid = ys - (a * xs**2 + b * xs + cc)
    return ParabolaFit(float(a), float(b), float(cc), c is not None, len(xs), float(xs.min()),
                       float(xs.max()), float(np.sqrt(np.mean(resid**2))),
                       tuple(map(float, xs)), tuple(map(float, ys)))


@dataclasses.dataclass(frozen=True)
class Optimum:
    """The loss-optimal point of one LR sweep at horizon D and batch B (PAPER.md §5).

    `x_star`/`loss_star` come from the fixed-c fit when ln V is known, else the free-c fit.
    `ok` is False when that fit has no minimum (a ≤ 0; `flag` says so): x_star, loss_star and
    log2_eta_star are then NaN, and the empirical minimum (`*_emp`) is all there is.
    `log2_eta_star`: LR of the run whose log2 norm is nearest the vertex (the paper's η*);
    `log2_eta_interp`: log2 η interpolated at the vertex along the sweep (norm is monotone
    in η, Fig. 1b). `eta_edge`: "low" / "high" when the lowest measured loss is at the
    smallest / largest η of the sweep (the optimum may lie beyond the grid), else "".
    """

    setup: tuple[tuple[str, Any], ...]
    log2_D: float
    batch_size: float
    x_star: float
    loss_star: float
    log2_eta_star: float
    log2_eta_interp: float
    ok: bool
    flag: str
    fixed: ParabolaFit | None
    free: ParabolaFit | None
    n_runs: int
    x_emp: float
    loss_emp: float
    log2_eta_emp: float
    in_range: bool = True  # the vertex lies within the fitted points (not extrapolated)
    free_c: bool = False  # the optimum comes from the free-c fit
    eta_edge: str = ""

    @property
    def log2_B(self) -> float:
        return math.log2(self.batch_size)

    def setting(self, key: str) -> Any:
        return dict(self.setup).get(key)

    @property
    def fit(self) -> ParabolaFit | None:
        """The fit x_star and loss_star come from (`fixed`, unless c was free or unknown)."""
        return self.free if self.fixed is None or self.free_c else self.fixed


def _groups(table: Sequence[Row], keys: Sequence[str]) -> dict[tuple, list[Row]]:
    """Rows grouped by their values of `keys`; groups ordered by setup, then D, then B."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in table:
        groups[tuple((k, row.get(k)) for k in keys)].append(row)

    def order(key: tuple) -> tuple:
        d = dict(key)
        rest = str([(k, v) for k, v in key if k not in SWEEP_AXES])
        return rest, _num(d.get("log2_D")), _num(d.get(BATCH_KEY))
    return dict(sorted(groups.items(), key=lambda kv: order(kv[0])))


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def fit_optima(table: Sequence[Row], *, vocab_size: int | None = None, k: int = 7,
               loss_key: str = "loss", group_keys: Sequence[str] = GROUP_KEYS,
               free_c: bool = False) -> list[Optimum]:
    """One `Optimum` per LR sweep (group of rows sharing `group_keys`) with ≥ 3 runs.

    ln V for the fixed-c fit comes from `vocab_size`, else from each group's
    `model.vocab_size`; with neither only the free-c fit is made and used. `free_c` takes
    the optimum from the free-c fit even when ln V is known (both fits are kept).
    """
    optima = []
    for key, rows in _groups(table, group_keys).items():
        x = np.array([_num(r.get("log2_norm")) for r in rows])
        y = np.array([_num(r.get(loss_key)) for r in rows])
        lr = np.array([_num(r.get("log2_lr")) for r in rows])
        good = np.isfinite(x) & np.isfinite(y) & np.isfinite(lr)
        x, y, lr = x[good], y[good], lr[good]
        if len(x) < 3:
            continue
        vocab = vocab_size if vocab_size is not None else rows[0].get("model.vocab_size")
        c = math.log(vocab) if isinstance(vocab, (int, float)) and vocab > 1 else None
        fits: dict[str, ParabolaFit | None] = {"fixed": None, "free": None}
        for name, cc in (("fixed", c), ("free", None)):
            if name == "fixed" and cc is None:
                continue
            try:
                fits[name] = fit_parabola(x, y, c=cc, k=k)
            except ValueError:
                pass
        main = fits["fixed"] if c is not None and not free_c else fits["free"]
        i_emp = int(np.argmin(y))
        eta_edge = ("low" if lr[i_emp] == lr.min() else "high" if lr[i_emp] == lr.max()
                    else "")
        ok = main is not None and main.has_minimum
        if main is None:
            flag = "too few distinct points"
        elif not main.has_minimum:
            flag = f"no minimum (a = {main.a:.3g} ≤ 0)"
        elif not main.in_range:
            flag = "vertex outside the fitted points (extrapolated)"
        else:
            flag = ""
        x_star = main.x_star if ok else math.nan
        eta_star = float(lr[np.argmin(np.abs(x - x_star))]) if ok else math.nan
        order = np.argsort(x)
        eta_interp = float(np.interp(x_star, x[order], lr[order])) if ok else math.nan
        d = dict(key)
        optima.append(Optimum(
            setup=tuple((k_, v) for k_, v in key if k_ not in SWEEP_AXES),
            log2_D=_num(d.get("log2_D")), batch_size=_num(d.get(BATCH_KEY)), x_star=x_star,
            loss_star=main.loss_star if ok else math.nan, log2_eta_star=eta_star,
            log2_eta_interp=eta_interp, ok=ok, flag=flag, fixed=fits["fixed"],
            free=fits["free"], n_runs=len(x), x_emp=float(x[i_emp]), loss_emp=float(y[i_emp]),
            log2_eta_emp=float(lr[i_emp]), in_range=bool(main is not None and main.in_range),
            free_c=main is fits["free"], eta_edge=eta_edge))
    return optima


def by_setup(optima: Sequence[Optimum]) -> dict[tuple, list[Optimum]]:
    """Optima grouped by setup (everything but D and B), largest group first."""
    groups: dict[tuple, list[Optimum]] = defaultdict(list)
    for o in optima:
        groups[o.setup].append(o)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def setup_label(setup: tuple[tuple[str, Any], ...], varying: Sequence[str] | None = None) -> str:
    """`d_model=256, n_layers=4` — the items of a setup (only `varying` keys if given)."""
    items = [(k, v) for k, v in setup if v is not None and (varying is None or k in varying)]
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in items) or "all runs"


def _ok(optima: Sequence[Optimum]) -> list[Optimum]:
    return [o for o in optima if o.ok and math.isfinite(o.log2_eta_star)]


def fit_global(optima: Sequence[Optimum], *, eta: str = "log2_eta_star") -> LinearFit:
    """log2 η* = α·log2 B + β·log2 D + γ over the ok optima of one setup (Fig. 3b)."""
    ok = [o for o in _ok(optima) if math.isfinite(getattr(o, eta))]
    X = np.array([[o.log2_B, o.log2_D, 1.0] for o in ok]).reshape(-1, 3)
    return linear_fit(X, np.array([getattr(o, eta) for o in ok]), ("alpha", "beta", "gamma"))


def best_per_horizon(optima: Sequence[Optimum]) -> list[Optimum]:
    """For each D, the optimum with the lowest loss* over B (B*(D), Fig. 2a/7), sorted by D."""
    best: dict[float, Optimum] = {}
    for o in _ok(optima):
        if o.log2_D not in best or o.loss_star < best[o.log2_D].loss_star:
            best[o.log2_D] = o
    return [best[d] for d in sorted(best)]


def fit_horizon_scaling(optima: Sequence[Optimum]) -> dict[str, LinearFit]:
    """log2 B* = e·log2 D + const and log2 η*(D) = e'·log2 D + const at B*(D) (Fig. 7),
    B*(D) discrete (`best_per_horizon`, η-edge optima included; `transfer.horizon_curve`
    gives the continuous B* with edges left out).

    Keys `b_star`, `eta_star`; each needs ≥ 2 horizons (standard errors need ≥ 3).
    """
    best = best_per_horizon(optima)
    d = np.array([o.log2_D for o in best])
    return {"b_star": line_fit(d, np.array([o.log2_B for o in best]), "exponent"),
            "eta_star": line_fit(d, np.array([o.log2_eta_star for o in best]), "exponent")}


def norm_vs_batch(optima: Sequence[Optimum]) -> dict[float, LinearFit]:
    """Per D: log2 norm* = slope·log2 B + const over B (Fig. 2a: the slope is negative)."""
    out = {}
    for d in sorted({o.log2_D for o in _ok(optima)}):
        pts = [o for o in _ok(optima) if o.log2_D == d]
        if len({o.batch_size for o in pts}) >= 2:
            out[d] = line_fit(np.array([o.log2_B for o in pts]), np.array([o.x_star for o in pts]))
    return out


def optimal_norm_band(optima: Sequence[Optimum]) -> dict[str, float]:
    """The common optimal norm: mean ± std over D of log2 norm* at B*(D) (Fig. 2a band;
    paper 7.0 ± 0.2)."""
    xs = np.array([o.x_star for o in best_per_horizon(optima)])
    if len(xs) == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(xs.mean()), "std": float(xs.std()), "n": len(xs)}


def first_reach(table: Sequence[Row], target_log2_norm: float, *,
                group_keys: Sequence[str] = GROUP_KEYS) -> list[dict[str, Any]]:
    """Per sweep: the smallest η whose output norm reaches 2^target (Fig. 3a).

    Rows `{setup, log2_D, log2_B, log2_eta, reached}`; `reached` False (log2_eta NaN) when no
    η in the sweep gets there.
    """
    out = []
    for key, rows in _groups(table, group_keys).items():
        d = dict(key)
        pts = [(_num(r.get("log2_lr")), _num(r.get("log2_norm"))) for r in rows]
        hit = [lr for lr, x in pts if math.isfinite(lr) and math.isfinite(x)
               and x >= target_log2_norm]
        b = _num(d.get(BATCH_KEY))
        out.append({"setup": tuple((k, v) for k, v in key if k not in SWEEP_AXES),
                    "log2_D": _num(d.get("log2_D")), "log2_B": math.log2(b) if b > 0 else b,
                    "log2_eta": min(hit) if hit else math.nan, "reached": bool(hit)})
    return out


def fit_first_reach(points: Sequence[dict[str, Any]]) -> LinearFit:
    """log2 η_first = p·log2 B + q·log2 D + r over the reached points (Fig. 3a)."""
    pts = [p for p in points if p["reached"]]
    X = np.array([[p["log2_B"], p["log2_D"], 1.0] for p in pts]).reshape(-1, 3)
    return linear_fit(X, np.array([p["log2_eta"] for p in pts]), ("p", "q", "r"))


def scale_label(scales: tuple[float, ...]) -> str:
    """(1, 0.125, 1) → '1 : 1/8 : 1' (ratios relative to the input group)."""
    def frac(v: float) -> str:
        if v >= 1 or v <= 0:
            return f"{v:g}"
        inv = 1 / v
        return f"1/{inv:g}" if abs(inv - round(inv)) < 1e-9 else f"{v:g}"
    base = scales[0] if scales[0] else 1.0
    return " : ".join(frac(s / base) for s in scales)


def compare_setups(optima: Sequence[Optimum], key: str) -> list[dict[str, Any]]:
    """Setups that differ only in `key` (e.g. `schedule.name`: constant vs decayed, Fig. 8),
    side by side at each (D, B) they share: one row `{setup, log2_D, batch_size, by_value:
    {value: {x_star, loss_star, log2_eta_star, width}}}` (width: `near_optimal_width`)."""
    rows: dict[tuple, dict[Any, Optimum]] = defaultdict(dict)
    for o in _ok(optima):
        rest = tuple((k, v) for k, v in o.setup if k != key)
        rows[(rest, o.log2_D, o.batch_size)][o.setting(key)] = o
    out = []
    for (rest, d, b), by_value in sorted(rows.items(), key=lambda kv: str(kv[0])):
        if len(by_value) < 2:
            continue
        out.append({"setup": dict(rest), "log2_D": d, "batch_size": b, "by_value": {
            v: {"x_star": o.x_star, "loss_star": o.loss_star, "log2_eta_star": o.log2_eta_star,
                "width": o.fit.near_optimal_width()}
            for v, o in sorted(by_value.items(), key=lambda kv: str(kv[0]))}})
    return sorted(out, key=lambda r: (str(r["setup"]), r["log2_D"], r["batch_size"]))


def lr_scale_ranking(table: Sequence[Row], *, top: float = 0.1, loss_key: str = "loss",
                     group_keys: Sequence[str] = GROUP_KEYS) -> list[dict[str, Any]]:
    """Per-group LR ranking (Fig. 4), most often top first.

    A setting is a group of `group_keys` without the LR scales. In each setting every
    (input, hidden, output) scale configuration gets its best loss over η; configurations
    are ranked, and the best max(1, ⌈top·n⌉) are "top". Rows: `{scales, label, settings,
    in_top, fraction, mean_rank}` (rank 1 = best).
    """
    keys = [k for k in group_keys if k not in LR_SCALE_KEYS]
    stats: dict[tuple, dict[str, Any]] = {}
    for rows in _groups(table, keys).values():
        best: dict[tuple, float] = {}
        for r in rows:
            scales = tuple(_num(r.get(k, 1.0)) for k in LR_SCALE_KEYS)
            loss = _num(r.get(loss_key))
            if math.isfinite(loss) and loss < best.get(scales, math.inf):
                best[scales] = loss
        if len(best) < 2:
            continue
        ranked = sorted(best, key=best.get)
        n_top = max(1, math.ceil(top * len(ranked)))
        for rank, scales in enumerate(ranked, start=1):
            s = stats.setdefault(scales, {"settings": 0, "in_top": 0, "ranks": []})
            s["settings"] += 1
            s["in_top"] += rank <= n_top
            s["ranks"].append(rank)
    out = [{"scales": list(s), "label": scale_label(s), "settings": v["settings"],
            "in_top": v["in_top"], "fraction": v["in_top"] / v["settings"],
            "mean_rank": float(np.mean(v["ranks"]))} for s, v in stats.items()]
    return sorted(out, key=lambda r: (-r["fraction"], r["mean_rank"]))

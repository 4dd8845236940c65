"""The paper's figures from a sweep table and its fits (matplotlib, Agg backend, PNG).

Fig. 1a loss vs log2 output norm over an LR sweep (a parabola); Fig. 1b output norm vs
tokens; Fig. 2a/2b per-D (per-width/depth) curves of the per-B optima, the common optimal
norm as a band; Fig. 3a first (η, B) to reach the optimal norm; Fig. 3b η* vs B with the
global fit; Fig. 4 per-group LR ranking; Fig. 8 setups side by side (LR decay, momentum);
Fig. 9 layer norms vs tokens (weight decay). Every function writes one PNG atomically and
returns its path.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors, ticker  # noqa: E402

from scion_jax.analysis.collect import BATCH_KEY, Row  # noqa: E402
from scion_jax.analysis.fits import (  # noqa: E402
    Optimum,
    best_per_horizon,
    optimal_norm_band,
    setup_label,
)
from scion_jax.analysis.regression import LinearFit  # noqa: E402


def _save(fig: plt.Figure, path: str) -> str:
    """savefig to a temp file next to `path`, then os.replace (never a half-written PNG)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fig.", suffix=".png")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def in_setup(table: Sequence[Row], setup: tuple[tuple[str, Any], ...] | None) -> list[Row]:
    """The rows whose values match every item of `setup` (all rows if None)."""
    if setup is None:
        return list(table)
    return [r for r in table if all(r.get(k) == v for k, v in setup)]


def _finite(table: Sequence[Row], *keys: str) -> list[Row]:
    def ok(v: Any) -> bool:
        return isinstance(v, (int, float)) and math.isfinite(v)
    return [r for r in table if all(ok(r.get(k)) for k in keys)]


def _grid(n: int, width: float = 4.0, height: float = 3.4) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    fig.subplots_adjust(wspace=0.35, hspace=0.4)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def _lr_colors(values: np.ndarray) -> tuple[colors.Normalize, Any]:
    norm = colors.Normalize(vmin=float(np.min(values)), vmax=float(np.max(values)))
    return norm, plt.get_cmap("viridis")


def _pick(values: Sequence[float], n: int) -> list[float]:
    """At most n of the sorted distinct values, evenly spread (ends included)."""
    vals = sorted(set(values))
    if len(vals) <= n:
        return vals
    return [vals[round(i)] for i in np.linspace(0, len(vals) - 1, n)]


def fig_loss_vs_norm(table: Sequence[Row], optima: Sequence[Optimum], path: str, *,
                     log2_D: float | None = None, setup: tuple | None = None,
                     batch_sizes: Sequence[float] | None = None, max_panels: int = 8,
                     loss_key: str = "loss") -> str:
    """Fig. 1a: loss vs log2 output norm at horizon D, one panel per B, colour = log2 η;
    the fitted parabola (fixed c = ln V when known) and its vertex on top.

    `log2_D` defaults to the horizon with the most fitted optima; `batch_sizes` to at most
    `max_panels` of the sweep's batch sizes."""
    rows = _finite(in_setup(table, setup), "log2_norm", loss_key, "log2_lr", BATCH_KEY)
    if log2_D is None:  # the horizon with the most ok optima, the largest on ties
        counts = {d: sum(o.ok for o in optima if o.log2_D == d)
                  for d in {r["log2_D"] for r in rows}}
        log2_D = max(counts, key=lambda d: (counts[d], d))
    rows = [r for r in rows if r["log2_D"] == log2_D]
    if not rows:
        raise ValueError(f"no rows at log2 D = {log2_D}")
    if batch_sizes is not None:
        rows = [r for r in rows if r[BATCH_KEY] in set(batch_sizes)]
        if not rows:
            raise ValueError(f"no rows with batch size in {list(batch_sizes)}")
    batches = _pick([r[BATCH_KEY] for r in rows], max_panels)
    norm, cmap = _lr_colors(np.array([r["log2_lr"] for r in rows]))
    fig, axes = _grid(len(batches))
    opt = {o.batch_size: o for o in optima if o.log2_D == log2_D
           and (setup is None or o.setup == setup)}
    for ax, b in zip(axes, batches, strict=False):
        pts = sorted((r["log2_norm"], r[loss_key], r["log2_lr"]) for r in rows
                     if r[BATCH_KEY] == b)
        x, y, lr = (np.array(v) for v in zip(*pts, strict=True))
        ax.plot(x, y, color="0.8", lw=0.8, zorder=1)
        ax.scatter(x, y, c=lr, cmap=cmap, norm=norm, s=22, zorder=2)
        o = opt.get(b)
        fit = None if o is None else o.fit
        if fit is not None and fit.has_minimum:
            xs = np.linspace(fit.x_lo - 0.5, fit.x_hi + 0.5, 100)
            ax.plot(xs, fit(xs), "r-", lw=1.2, label=f"fit, x* = {fit.x_star:.2f}")
            ax.axvline(fit.x_star, color="r", ls=":", lw=1)
            ax.legend(fontsize=8, loc="upper center")
        elif o is not None:
            ax.set_title(f"B = {b:g}: {o.flag}", fontsize=8)
        spread = float(np.median(y) - y.min())
        if y.max() > y.min() + 4 * spread > y.min():  # diverged runs would squash the rest
            ax.set_ylim(y.min() - 0.2 * spread, y.min() + 4 * spread)
        ax.set(xlabel="log2 output norm", ylabel=loss_key.replace("_", " "))
        if not ax.get_title():
            ax.set_title(f"B = {b:g}, D = 2^{log2_D:g}", fontsize=10)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="log2 η",
                 shrink=0.8)
    fig.suptitle("Fig. 1a: loss vs output norm over the LR sweep", y=1.02)
    return _save(fig, path)


def fig_norm_vs_tokens(table: Sequence[Row], path: str, *, setup: tuple | None = None,
                       max_panels: int = 4) -> str:
    """Fig. 1b: output norm ‖W_out‖_{RMS→∞} vs tokens for each run (η, B), log–log axes,
    one panel per B, colour = log2 η."""
    rows = _finite(in_setup(table, setup), "output_norm", "tokens", "log2_lr", BATCH_KEY)
    if not rows:
        raise ValueError("no rows with an output norm")
    batches = _pick([r[BATCH_KEY] for r in rows], max_panels)
    norm, cmap = _lr_colors(np.array([r["log2_lr"] for r in rows]))
    fig, axes = _grid(len(batches))
    for ax, b in zip(axes, batches, strict=False):
        runs: dict[str, list[Row]] = {}
        for r in rows:
            if r[BATCH_KEY] == b:
                runs.setdefault(r["run"], []).append(r)
        for run_rows in runs.values():
            run_rows.sort(key=lambda r: r["tokens"])
            ax.plot([r["tokens"] for r in run_rows], [r["output_norm"] for r in run_rows],
                    color=cmap(norm(run_rows[0]["log2_lr"])), lw=1, marker=".", ms=3)
        ax.axhline(1.0, color="0.5", ls=":", lw=0.8)
        _log2_tokens_axis(ax)
        ax.set(yscale="log", ylabel="output norm", title=f"B = {b:g}")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="log2 η",
                 shrink=0.8)
    fig.suptitle("Fig. 1b: output norm grows with tokens and with η", y=1.02)
    return _save(fig, path)


def _log2_tokens_axis(ax: plt.Axes) -> None:
    """Tokens on a log2 axis labelled 2^k (log10 minor labels would collide)."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("tokens")


def _band(ax: plt.Axes, band: dict[str, float], label: str) -> None:
    if math.isfinite(band["mean"]):
        half = max(band["std"], 0.02)
        ax.axvspan(band["mean"] - half, band["mean"] + half, color="orange", alpha=0.25,
                   label=f"{label}: 2^({band['mean']:.2f} ± {band['std']:.2f})")


def fig_optima_by_horizon(optima: Sequence[Optimum], path: str, *, max_curves: int = 8) -> str:
    """Fig. 2a: per D, the per-B optima (log2 norm*, loss*) joined in B order; the best B
    per D starred; the common optimal norm (mean ± std of the starred norms over all D) as a
    band. At most `max_curves` horizons are drawn, evenly spread."""
    ok = [o for o in optima if o.ok]
    if not ok:
        raise ValueError("no optima with a minimum")
    ds = _pick([o.log2_D for o in ok], max_curves)
    cmap = plt.get_cmap("plasma")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, d in enumerate(ds):
        pts = sorted((o for o in ok if o.log2_D == d), key=lambda o: o.batch_size)
        col = cmap(i / max(len(ds) - 1, 1) * 0.9)
        ax.plot([o.x_star for o in pts], [o.loss_star for o in pts], "o-", color=col, ms=4,
                label=f"D = 2^{d:g}")
        for o in pts:
            ax.annotate(f"{o.batch_size:g}", (o.x_star, o.loss_star), fontsize=6,
                        xytext=(2, 2), textcoords="offset points", color=col)
    best = [o for o in best_per_horizon(ok) if o.log2_D in ds]
    ax.plot([o.x_star for o in best], [o.loss_star for o in best], "k*", ms=11, label="B*(D)")
    _band(ax, optimal_norm_band(ok), "optimal norm")
    ax.set(xlabel="log2 output norm at the optimum", ylabel="loss*",
           title="Fig. 2a: per-B optima per horizon (labels: B)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def fig_optima_by_model(optima: Sequence[Optimum], path: str, *, key: str = "model.d_model",
                        log2_D: float | None = None) -> str:
    """Fig. 2b for width (`model.d_model`) or depth (`model.n_layers`), over the batch sizes
    every value of `key` has. Left: the optimal log2 norm at each value's best B vs log2 D
    (transfer = the lines coincide). Right: at horizon D (default: the largest all share),
    one curve of per-B optima per value, its best B starred, and the band of their norms."""
    ok = [o for o in optima if o.ok and o.setting(key) is not None]
    values = sorted({o.setting(key) for o in ok})
    if len(values) < 2:
        raise ValueError(f"{key} takes {len(values)} value(s); Fig. 2b needs ≥ 2")
    shared = set.intersection(*({o.batch_size for o in ok if o.setting(key) == v}
                                for v in values))
    ok = [o for o in ok if o.batch_size in shared] or ok
    if log2_D is None:  # the largest D that every value of `key` has
        common = set.intersection(*({o.log2_D for o in ok if o.setting(key) == v}
                                    for v in values))
        log2_D = max(common) if common else max(o.log2_D for o in ok)
    name = key.split(".")[-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    cmap = plt.get_cmap("viridis")
    stars = []
    for i, v in enumerate(values):
        col = cmap(i / max(len(values) - 1, 1) * 0.9)
        best = best_per_horizon([o for o in ok if o.setting(key) == v])
        left.plot([o.log2_D for o in best], [o.x_star for o in best], "o-", color=col, ms=4,
                  label=f"{name} = {v}")
        pts = sorted((o for o in ok if o.setting(key) == v and o.log2_D == log2_D),
                     key=lambda o: o.batch_size)
        if not pts:
            continue
        right.plot([o.x_star for o in pts], [o.loss_star for o in pts], "o-", color=col, ms=4,
                   label=f"{name} = {v}")
        star = min(pts, key=lambda o: o.loss_star)
        right.plot(star.x_star, star.loss_star, "*", color=col, mec="k", ms=14)
        stars.append(star)
    xs = np.array([o.x_star for o in stars])
    _band(right, {"mean": float(xs.mean()), "std": float(xs.std()), "n": len(xs)},
          "optimal norm")
    lo, hi = right.get_xlim()
    mid = (lo + hi) / 2
    right.set_xlim(min(lo, mid - 0.75), max(hi, mid + 0.75))  # don't magnify tiny spreads
    left.set(xlabel="log2 D (tokens)", ylabel="log2 output norm at the optimum (best B)",
             title=f"optimal norm vs horizon, per {name}")
    right.set(xlabel="log2 output norm at the optimum", ylabel="loss*",
              title=f"per-B optima at D = 2^{log2_D:g} (★ best B)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.suptitle(f"Fig. 2b: the optimal output norm across {name}", y=1.0)
    return _save(fig, path)


def _fit_lines(ax: plt.Axes, fit: LinearFit, ds: Sequence[float],
               bs_by_d: dict[float, list[float]], cmap: Any) -> None:
    """The fitted plane log2 η = c0·log2 B + c1·log2 D + c2 as one dashed line per D, over
    the batch sizes that D has."""
    for i, d in enumerate(ds):
        xb = np.linspace(min(bs_by_d[d]), max(bs_by_d[d]), 20)
        X = np.stack([xb, np.full_like(xb, d), np.ones_like(xb)], 1)
        ax.plot(xb, fit.predict(X), "--", lw=1, color=cmap(i / max(len(ds) - 1, 1) * 0.9))


def fig_first_reach(points: Sequence[dict[str, Any]], fit: LinearFit | None, path: str, *,
                    target_log2_norm: float | None = None, max_curves: int = 8) -> str:
    """Fig. 3a: per D, the smallest log2 η reaching the target norm vs log2 B; dashed: the
    fit log2 η = p·log2 B + q·log2 D + r (at most `max_curves` horizons drawn)."""
    pts = [p for p in points if p["reached"]]
    if not pts:
        raise ValueError("no (D, B) reaches the target norm")
    ds = _pick([p["log2_D"] for p in pts], max_curves)
    cmap = plt.get_cmap("plasma")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, d in enumerate(ds):
        q = sorted((p for p in pts if p["log2_D"] == d), key=lambda p: p["log2_B"])
        ax.plot([p["log2_B"] for p in q], [p["log2_eta"] for p in q], "o", ms=5,
                color=cmap(i / max(len(ds) - 1, 1) * 0.9), label=f"D = 2^{d:g}")
    title = "Fig. 3a: first η to reach the optimal norm"
    if target_log2_norm is not None:
        title += f" 2^{target_log2_norm:.2f}"
    if fit is not None:
        _fit_lines(ax, fit, ds, {d: [p["log2_B"] for p in pts if p["log2_D"] == d]
                                 for d in ds}, cmap)
        title += f"\nlog2 η = {fit['p']:.2f}·log2 B {fit['q']:+.2f}·log2 D {fit['r']:+.1f}"
    ax.set(xlabel="log2 B", ylabel="log2 η (first reach)", title=title)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def fig_eta_star(optima: Sequence[Optimum], fit: LinearFit | None, path: str, *,
                 max_curves: int = 8) -> str:
    """Fig. 3b: log2 η* vs log2 B per D; dashed: log2 η* = α·log2 B + β·log2 D + γ (at most
    `max_curves` horizons drawn; the fit uses all)."""
    ok = [o for o in optima if o.ok]
    if not ok:
        raise ValueError("no optima with a minimum")
    ds = _pick([o.log2_D for o in ok], max_curves)
    cmap = plt.get_cmap("plasma")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, d in enumerate(ds):
        q = sorted((o for o in ok if o.log2_D == d), key=lambda o: o.batch_size)
        ax.plot([o.log2_B for o in q], [o.log2_eta_star for o in q], "o", ms=5,
                color=cmap(i / max(len(ds) - 1, 1) * 0.9), label=f"D = 2^{d:g}")
    title = "Fig. 3b: optimal learning rate"
    if fit is not None:
        _fit_lines(ax, fit, ds, {d: [o.log2_B for o in ok if o.log2_D == d] for d in ds}, cmap)
        title += (f"\nlog2 η* = {fit['alpha']:.2f}·log2 B {fit['beta']:+.2f}·log2 D "
                  f"{fit['gamma']:+.1f} (R² {fit.r2:.2f})")
    ax.set(xlabel="log2 B", ylabel="log2 η*", title=title)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def fig_compare_setups(table: Sequence[Row], optima: Sequence[Optimum], path: str, *,
                       key: str, log2_D: float, batch_size: float, title: str = "",
                       loss_key: str = "loss") -> str:
    """Fig. 8: loss vs log2 output norm at one (D, B) for setups that differ in `key`
    (e.g. constant vs decayed LR, momentum), each with its fitted parabola and vertex."""
    opts = [o for o in optima if o.ok and o.log2_D == log2_D and o.batch_size == batch_size]
    if len({o.setting(key) for o in opts}) < 2:
        raise ValueError(f"fewer than 2 values of {key} at D = 2^{log2_D:g}, B = {batch_size:g}")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ys = []
    for i, o in enumerate(sorted(opts, key=lambda o: str(o.setting(key)))):
        rows = [r for r in _finite(in_setup(table, o.setup), "log2_norm", loss_key)
                if r["log2_D"] == log2_D and r.get(BATCH_KEY) == batch_size]
        x = np.array([r["log2_norm"] for r in rows])
        y = np.array([r[loss_key] for r in rows])
        ys.extend(y)
        col = plt.get_cmap("tab10")(i)
        fit = o.fit
        ax.scatter(x, y, color=col, s=22)
        xs = np.linspace(fit.x_lo - 0.5, fit.x_hi + 0.5, 100)
        ax.plot(xs, fit(xs), "-", color=col, lw=1.2, label=(
            f"{o.setting(key)}: x* = {o.x_star:.2f}, "
            f"loss* = {o.loss_star:.3f}, 1% width {fit.near_optimal_width():.2f}"))
        ax.axvline(o.x_star, color=col, ls=":", lw=1)
    ys = np.array(ys)
    spread = float(np.median(ys) - ys.min())
    if spread > 0:
        ax.set_ylim(ys.min() - 0.2 * spread, ys.min() + 4 * spread)
    ax.set(xlabel="log2 output norm", ylabel=loss_key.replace("_", " "),
           title=title or f"Fig. 8: {key} at D = 2^{log2_D:g}, B = {batch_size:g}")
    ax.legend(fontsize=7, loc="upper center")
    return _save(fig, path)


def fig_layer_norms(table: Sequence[Row], path: str, *, setup: tuple | None = None,
                    reference: float | None = None) -> str:
    """Fig. 9: output, input and (mean) hidden layer norms vs tokens per run, colour = log2 η;
    `reference` (e.g. 1/λ under weight decay λ) dashed."""
    keys = ("output_norm", "input_norm", "hidden_norm")
    rows = _finite(in_setup(table, setup), "tokens", "log2_lr", *keys)
    if not rows:
        raise ValueError("no rows with layer-group norms")
    norm, cmap = _lr_colors(np.array([r["log2_lr"] for r in rows]))
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys, strict=True):
        runs: dict[str, list[Row]] = {}
        for r in rows:
            runs.setdefault(r["run"], []).append(r)
        for run_rows in runs.values():
            run_rows.sort(key=lambda r: r["tokens"])
            ax.plot([r["tokens"] for r in run_rows], [r[key] for r in run_rows],
                    color=cmap(norm(run_rows[0]["log2_lr"])), lw=1, marker=".", ms=3)
        if reference is not None:
            ax.axhline(reference, color="k", ls="--", lw=1)
        _log2_tokens_axis(ax)
        ax.set(yscale="log", title=key.replace("_", " "))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="log2 η",
                 shrink=0.8)
    ref = "" if reference is None else f" (dashed: {reference:g})"
    fig.suptitle(f"Fig. 9: layer norms vs tokens{ref}", y=1.02)
    return _save(fig, path)


def fig_lr_ranking(ranking: Sequence[dict[str, Any]], path: str, *, top: float = 0.1,
                   max_bars: int = 20) -> str:
    """Fig. 4: fraction of settings in which each (input : hidden : output) LR-scale
    configuration is in the top `top` fraction, best first."""
    rows = list(ranking)[:max_bars]
    if not rows:
        raise ValueError("no LR-scale ranking")
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["fraction"] for r in rows], color="tab:blue")
    ax.set_yticks(y, [f"{r['label']}  (n={r['settings']}, mean rank {r['mean_rank']:.1f})"
                      for r in rows], fontsize=8)
    ax.set(xlim=(0, 1.05), xlabel=f"fraction of settings in the top {top:.0%}",
           title="Fig. 4: per-group LR scales (input : hidden : output)")
    return _save(fig, path)


__all__ = ["fig_compare_setups", "fig_eta_star", "fig_first_reach", "fig_layer_norms",
           "fig_loss_vs_norm", "fig_lr_ranking", "fig_norm_vs_tokens", "fig_optima_by_horizon",
           "fig_optima_by_model", "in_setup", "setup_label"]


def fig_norm_transfer(reading: dict[str, Any], path: str, *,
                      paper: tuple[float, float] = (7.0, 0.2)) -> str:
    """The optimal log2 output norm against the horizon D, from `transfer.read_out`.

    Left: each B's own optimum (thin lines; hollow where its lowest loss is at the η grid's
    edge, left out of the fits), the optimal norm at the continuous B*(D) with its bootstrap
    95% interval (black; hollow where B* is at the B grid's edge, left out), the free-c
    fits' beside it (grey), the slope over the longest horizons that decides the verdict
    (dashed), the paper's 2^(7.0 ± 0.2) (dotted). Right: log2 B*(D), continuous ± its
    standard error, and the discrete B*."""
    fixed, free = reading["fixed_c"], reading["free_c"]
    rows = fixed["horizons"]
    if not rows:
        raise ValueError("no horizons to draw")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    cmap = plt.get_cmap("viridis")
    batches = sorted({p[BATCH_KEY] for r in rows for p in r["per_b"]})
    for i, b in enumerate(batches):
        col = cmap(i / max(len(batches) - 1, 1) * 0.9)
        pts = [(r["log2_D"], p) for r in rows for p in r["per_b"]
               if p[BATCH_KEY] == b and p["ok"]]
        ax.plot([d for d, _ in pts], [p["x_star"] for _, p in pts], "-", lw=0.9, alpha=0.7,
                color=col, label=f"B = {b:g}")
        for d, p in pts:
            ax.plot(d, p["x_star"], "o", ms=4, color=col, mfc="none" if p["eta_edge"] else col)
    ax.plot([], [], "o", ms=4, color="0.4", mfc="none", label="η-edge optimum (left out)")
    for fit, col, dx, name in ((fixed, "k", 0.0, "c = ln V"), (free, "0.55", 0.08, "free c")):
        for used in (True, False):
            r_ = [r for r in fit["horizons"] if r["used"] == used and math.isfinite(r["x_star"])]
            if not r_:
                continue
            d = np.array([r["log2_D"] for r in r_]) + dx
            x = np.array([r["x_star"] for r in r_])
            err = np.array([[max(r["x_star"] - r["x_lo"], 0), max(r["x_hi"] - r["x_star"], 0)]
                            if math.isfinite(r["x_lo"]) else [0, 0] for r in r_]).T
            ax.errorbar(d, x, yerr=err, fmt="s" if name == "free c" else "o", ms=6, capsize=3,
                        color=col, mfc=col if used else "white", zorder=3,
                        label=f"at B*(D), {name}" + ("" if used else ", B edge (left out)"))
        s = fit["slope"]
        if math.isfinite(s["per_doubling"]):
            chosen = [r for r in fit["horizons"] if r["log2_D"] in s["horizons"]]
            d = np.array([r["log2_D"] for r in chosen])
            x = np.array([r["x_star"] for r in chosen])
            ax.plot(d + dx, x.mean() + s["per_doubling"] * (d - d.mean()), "--", color=col, lw=1.2,
                    label=f"{name}: {s['per_doubling']:+.2f} [{s['lo']:+.2f}, {s['hi']:+.2f}] "
                          f"per doubling → {fit['verdict']}")
    ax.axhline(paper[0], color="gray", ls=":", lw=1,
               label=f"paper: 2^({paper[0]:g} ± {paper[1]:g}), D = 2^29…2^37")
    xs = [p["x_star"] for r in rows for p in r["per_b"] if p["ok"]]
    ax.set_ylim(min(xs) - 0.3, max(*xs, paper[0]) + 0.5)  # bars running past it are clipped
    ax.set(xlabel="log2 D (tokens)", ylabel="optimal log2 output norm",
           title=f"Norm transfer across horizons: {reading['verdict']}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    for used in (True, False):
        r_ = [r for r in rows if math.isfinite(r["log2_b_star"]) and r["used"] == used]
        bx.errorbar([r["log2_D"] for r in r_], [r["log2_b_star"] for r in r_],
                    yerr=[r["log2_b_star_se"] if math.isfinite(r["log2_b_star_se"]) else 0
                          for r in r_], fmt="o", color="k", mfc="k" if used else "white",
                    capsize=3, label="continuous (parabola in log2 B)"
                    + ("" if used else ", B edge (left out)"))
    disc = [r for r in rows if math.isfinite(r["b_star"])]
    bx.plot([r["log2_D"] for r in disc], [math.log2(r["b_star"]) for r in disc], "x",
            color="tab:red", label="discrete (lowest loss*)")
    for b in batches:
        bx.axhline(math.log2(b), color="0.85", lw=0.8, zorder=0)
    bx.set(xlabel="log2 D (tokens)", ylabel="log2 B*", title="B*(D), c = ln V")
    bx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    return _save(fig, path)

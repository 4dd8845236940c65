"""Analyse a norm-transfer sweep: collect → table.csv → fits.json → the paper's figures.

    python experiments/plot.py --sweep_dir=workdirs/sweep[,more,sweeps] \
        --out_dir=workdirs/sweep_plots [--vocab_size=V] [--k=7] [--window_log2=0] \
        [--loss=loss|eval_loss|eval_spread_loss] [--target_log2_norm=T]

Per setup (everything held fixed while η, B and D vary; the largest is the primary) it fits
the per-(D, B) optima (PAPER.md §5), the global η* law (Fig. 3b), B*(D) and η*(D) (Fig. 7),
the first-reach law (Fig. 3a); across setups the LR-scale ranking (Fig. 4), setups that
differ in one variant (LR decay, momentum, weight decay, optimizer, precision) side by side
(Fig. 8), and layer norms under weight decay against 1/λ (Fig. 9). Figures the
data cannot support (e.g. one width only → no Fig. 2b) are skipped with a message. With
runs of several seeds, the fits and figures use the lowest seed's (table.csv keeps them all;
`horizon_study.py` turns the others into error bars). Every
output is written to a temp file and moved into place, so a kill never leaves half a file.
Needs numpy and matplotlib only (no jax).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scion_jax.analysis import figures, transfer  # noqa: E402
from scion_jax.analysis import fits as fits_lib  # noqa: E402
from scion_jax.analysis.collect import (  # noqa: E402
    SweepWarning,
    Table,
    atomic_write_text,
    collect,
    column,
    is_table_source,
    read_table,
    run_identity,
    write_csv,
)
from scion_jax.analysis.regression import LinearFit  # noqa: E402

_SWEEP = flags.DEFINE_list("sweep_dir", None,
                           "Sweep directories (comma-separated), each with a run directory per "
                           "point; analysed as one table. An entry may be the table.csv of an "
                           "earlier analysis (beside its fits.json): its rows stand in for runs "
                           "whose raw metrics are gone, for the runs no directory has.")
_OUT = flags.DEFINE_string("out_dir", None, "Where table.csv, fits.json and the PNGs go.")
_VOCAB = flags.DEFINE_integer("vocab_size", None,
                              "V for the fixed c = ln V fit (default: model.vocab_size).")
_K = flags.DEFINE_integer("k", 7, "Points nearest the empirical minimum in each parabola fit.")
_WINDOW = flags.DEFINE_float(
    "window_log2", 0.0, "Each horizon D's loss: the mean of the logged losses with tokens in "
    "[D·2^-w, the first logged ≥ D] (0: that one point)."
)
_TARGET = flags.DEFINE_float("target_log2_norm", None,
                             "Norm target of Fig. 3a (default: the fitted common optimal norm).")
_LOSS = flags.DEFINE_string(
    "loss", "loss", "Which loss the optima are fitted to: `loss` (training, over the window), "
    "`eval_loss` or another held-out loss the runs log (`eval_spread_loss`).")
_DROP_EXTRAPOLATED = flags.DEFINE_bool(
    "drop_extrapolated", False,
    "Leave optima whose vertex lies outside the fitted points out of the scaling fits.")
_FREE_C = flags.DEFINE_bool("free_c", False,
                            "Take the optima from the free-c parabola fits (default: c = ln V).")
_ALLOW_PARTIAL = flags.DEFINE_bool("allow_partial", False,
                                   "Keep unfinished runs (their reached horizons only).")


def jsonable(obj: Any) -> Any:
    """Dataclasses/tuples/numpy scalars → JSON types; NaN/inf → null (strict JSON)."""
    if isinstance(obj, LinearFit):
        return jsonable({**dict(zip(obj.names, obj.coef, strict=True)),
                         "se": dict(zip(obj.names, obj.se, strict=True)), "r2": obj.r2,
                         "n": obj.n, "residual_std": obj.residual_std})
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, fits_lib.ParabolaFit):
            out.update(x_star=jsonable(obj.x_star), loss_star=jsonable(obj.loss_star),
                       has_minimum=obj.has_minimum, in_range=obj.in_range,
                       near_optimal_width=jsonable(obj.near_optimal_width()))
        if isinstance(obj, fits_lib.Optimum):
            out["setup"] = {k: jsonable(v) for k, v in obj.setup}
        return out
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "item"):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def _try(what: str, fn: Callable[[], Any]) -> Any:
    """fn(), or a {"error": ...} record when the data cannot support the fit."""
    try:
        return fn()
    except (ValueError, KeyError) as e:
        print(f"  {what}: skipped ({e})")
        return {"error": str(e)}


def fit_setup(table: Table, optima: list[fits_lib.Optimum],
              target: float | None) -> dict[str, Any]:
    """Every fit of one setup (its optima and its table rows) as a JSON-ready dict."""
    band = fits_lib.optimal_norm_band(optima)
    t = target if target is not None else band["mean"]
    out: dict[str, Any] = {
        "n_optima": len(optima), "n_ok": sum(o.ok for o in optima),
        "flags": sorted({o.flag for o in optima if o.flag}),
        "optima": optima, "norm_band": band,
        "global": _try("global fit (Fig. 3b)", lambda: fits_lib.fit_global(optima)),
        "horizon_scaling": _try("B*(D), η*(D) (Fig. 7)",
                                lambda: fits_lib.fit_horizon_scaling(optima)),
        "norm_vs_batch": fits_lib.norm_vs_batch(optima),
        "best_per_horizon": [{"log2_D": o.log2_D, "batch_size": o.batch_size,
                              "x_star": o.x_star, "loss_star": o.loss_star,
                              "log2_eta_star": o.log2_eta_star}
                             for o in fits_lib.best_per_horizon(optima)],
    }
    if math.isfinite(t):
        pts = fits_lib.first_reach(table, t)
        out["first_reach"] = {"target_log2_norm": t, "points": pts,
                              "fit": _try("first-reach fit (Fig. 3a)",
                                          lambda: fits_lib.fit_first_reach(pts))}
    return out


def _figure(name: str, out_dir: str, made: list[str], fn: Callable[[str], str]) -> None:
    path = os.path.join(out_dir, name)
    try:
        made.append(fn(path))
        print(f"  wrote {name}")
    except ValueError as e:
        print(f"  {name}: skipped ({e})")


def _fit_or_none(record: Any) -> LinearFit | None:
    return record if isinstance(record, LinearFit) else None


def _siblings(optima: list[fits_lib.Optimum], setup: tuple, key: str) -> list[fits_lib.Optimum]:
    """Optima whose setup equals `setup` in everything but `key` (Fig. 2b's curves)."""
    base = {k: v for k, v in setup if k != key}
    return [o for o in optima if {k: v for k, v in o.setup if k != key} == base]


# Setups differing in one of these are compared side by side (Fig. 8, `fig8_<name>.png`).
VARIANT_KEYS = {"schedule.name": "schedule", "optimizer.momentum": "momentum",
                "optimizer.weight_decay": "weight_decay", "optimizer.name": "optimizer",
                "model.compute_dtype": "compute_dtype"}


def _collect_all(sources: list[str], *, window_log2: float = 0.0,
                 allow_partial: bool = False) -> Table:
    """One table from several sweeps; runs are named `<sweep>/<run>` when there are several.

    A source ending in .csv is an earlier analysis's table.csv (`collect.read_table`): its
    runs are added where no sweep directory (nor an earlier table) has a run of the same
    config (`run_identity`); a run on disk standing in for a table's run with more
    horizons is reported (`SweepWarning`), and so is a sweep directory without runs.
    """
    kwargs = {"window_log2": window_log2, "allow_partial": allow_partial}
    if len(sources) == 1 and not is_table_source(sources[0]):
        return collect(sources[0], **kwargs)
    table: Table = []
    for source in sorted(sources, key=is_table_source):  # directories first
        if is_table_source(source):
            rows = read_table(source, **kwargs)
        else:
            prefix = os.path.basename(os.path.normpath(source))
            rows = [{**r, "run": f"{prefix}/{r['run']}"} for r in collect(source, **kwargs)]
            if not rows:
                warnings.warn(f"no usable runs under {source!r}", SweepWarning, stacklevel=2)
        have: dict[tuple, set[int]] = {}
        for r in table:
            have.setdefault(run_identity(r), set()).add(r["log2_D"])
        by_run: dict[str, Table] = {}
        for r in rows:
            by_run.setdefault(r["run"], []).append(r)
        for run, mine in by_run.items():
            there = have.get(run_identity(mine[0]))
            if there is not None and {r["log2_D"] for r in mine} - there:
                warnings.warn(f"{source!r}: run {run!r} is also in another source, which "
                              f"has fewer horizons (2^{max(there)} at most); that one is used",
                              SweepWarning, stacklevel=2)
        table += [r for r in rows if run_identity(r) not in have]
    return table


def _comparison_figures(table: Table, optima: list[fits_lib.Optimum], varying: list[str],
                        record: dict[str, Any], out_dir: str, made: list[str]) -> None:
    """Fig. 8 for each varying variant key at the largest (D, B) its setups share; Fig. 9
    for the first setup with weight decay."""
    record["comparisons"] = {}
    for key in (k for k in VARIANT_KEYS if k in varying):
        rows = fits_lib.compare_setups(optima, key)
        record["comparisons"][key] = rows
        if rows:
            last = max(rows, key=lambda r: (len(r["by_value"]), r["log2_D"], -r["batch_size"]))
            _figure(f"fig8_{VARIANT_KEYS[key]}.png", out_dir, made, lambda p, k=key, r=last:
                    figures.fig_compare_setups(table, optima, p, key=k, log2_D=r["log2_D"],
                                               batch_size=r["batch_size"]))
    decayed = [o.setup for o in optima if (o.setting("optimizer.weight_decay") or 0) > 0]
    if decayed:
        lam = dict(decayed[0])["optimizer.weight_decay"]
        _figure("fig9_layer_norms.png", out_dir, made, lambda p: figures.fig_layer_norms(
            table, p, setup=decayed[0], reference=1 / lam))


def analyse(sweep_dir: str | list[str], out_dir: str, *, vocab_size: int | None = None, k: int = 7,
            window_log2: float = 0.0, target_log2_norm: float | None = None,
            allow_partial: bool = False, loss_key: str = "loss",
            drop_extrapolated: bool = False, free_c: bool = False) -> dict[str, Any]:
    """The whole pipeline; returns the fits record (also written to `out_dir/fits.json`)."""
    sweep_dirs = [sweep_dir] if isinstance(sweep_dir, str) else list(sweep_dir)
    os.makedirs(out_dir, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SweepWarning)
        table = _collect_all(sweep_dirs, window_log2=window_log2, allow_partial=allow_partial)
    skipped = [str(w.message) for w in caught if issubclass(w.category, SweepWarning)]
    for msg in skipped:
        print(f"warning: {msg}")
    if not table:
        raise SystemExit(f"No usable runs under {', '.join(sweep_dirs)}.")
    if not np.isfinite(column(table, loss_key)).any():
        raise SystemExit(f"No run logs {loss_key!r} at a horizon.")
    write_csv(table, os.path.join(out_dir, "table.csv"))
    n_runs, n_rows = len({r["run"] for r in table}), len(table)
    print(f"{n_runs} runs, {n_rows} rows → {os.path.join(out_dir, 'table.csv')}")
    tables = transfer.seed_tables(table)  # lowest seed first
    seeds = list(tables)
    table = tables[seeds[0]]  # one fit per (setup, B, D); other seeds are fitted on their own
    if len(seeds) > 1:
        print(f"fits and figures use seed {seeds[0]}'s runs; seeds {seeds[1:]} (their "
              f"{n_runs - len({r['run'] for r in table})} runs) are read out on their own in "
              "horizon_study.py")

    optima = fits_lib.fit_optima(table, vocab_size=vocab_size, k=k, loss_key=loss_key,
                                 free_c=free_c)
    if drop_extrapolated:
        n = len(optima)
        optima = [o for o in optima if o.in_range]
        print(f"dropped {n - len(optima)} extrapolated optima")
    setups = fits_lib.by_setup(optima)
    varying = [key for key in fits_lib.GROUP_KEYS if key not in fits_lib.SWEEP_AXES
               and len({dict(s).get(key) for s in setups}) > 1]
    record: dict[str, Any] = {
        "sweep_dirs": [os.path.relpath(d) for d in sweep_dirs], "k": k,
        "window_log2": window_log2,
        "loss": loss_key, "vocab_size": vocab_size, "free_c": free_c,
        "drop_extrapolated": drop_extrapolated,
        "n_runs": n_runs, "n_rows": n_rows,
        "seeds": {"fitted": seeds[0], "other": seeds[1:]},
        "skipped_runs": skipped, "varying": varying, "setups": [],
    }
    for setup, opts in setups.items():
        label = fits_lib.setup_label(setup, varying)
        print(f"setup {label}: {len(opts)} sweeps")
        rows = figures.in_setup(table, setup)
        record["setups"].append({"label": label, "setup": dict(setup),
                                 **fit_setup(rows, opts, target_log2_norm)})
    ranking = fits_lib.lr_scale_ranking(table, loss_key=loss_key)
    record["lr_ranking"] = ranking
    atomic_write_text(os.path.join(out_dir, "fits.json"),
                                  json.dumps(jsonable(record), indent=1, allow_nan=False))

    made: list[str] = []
    if not setups:
        print("  no fitted optima: only Fig. 1b and Fig. 4 can be drawn")
        _figure("fig1b_norm_vs_tokens.png", out_dir, made,
                lambda p: figures.fig_norm_vs_tokens(table, p))
    else:
        primary, opts = next(iter(setups.items()))
        main = record["setups"][0]
        _figure("fig1a_loss_vs_norm.png", out_dir, made, lambda p: figures.fig_loss_vs_norm(
            table, opts, p, setup=primary, loss_key=loss_key))
        _figure("fig1b_norm_vs_tokens.png", out_dir, made, lambda p: figures.fig_norm_vs_tokens(
            table, p, setup=primary))
        _figure("fig2a_optima_by_horizon.png", out_dir, made,
                lambda p: figures.fig_optima_by_horizon(opts, p))
        for key, name in (("model.d_model", "width"), ("model.n_layers", "depth")):
            _figure(f"fig2b_optima_by_{name}.png", out_dir, made,
                    lambda p, key=key: figures.fig_optima_by_model(
                        _siblings(optima, primary, key), p, key=key))
        if "first_reach" in main:
            fr = main["first_reach"]
            _figure("fig3a_first_reach.png", out_dir, made, lambda p: figures.fig_first_reach(
                fr["points"], _fit_or_none(fr["fit"]), p,
                target_log2_norm=fr["target_log2_norm"]))
        else:
            print("  fig3a_first_reach.png: skipped (no optimal norm to target)")
        _figure("fig3b_eta_star.png", out_dir, made, lambda p: figures.fig_eta_star(
            opts, _fit_or_none(main["global"]), p))
    _figure("fig4_lr_ranking.png", out_dir, made,
            lambda p: figures.fig_lr_ranking(ranking, p))
    _comparison_figures(table, optima, varying, record, out_dir, made)
    record["figures"] = [os.path.basename(p) for p in made]
    atomic_write_text(os.path.join(out_dir, "fits.json"),
                                  json.dumps(jsonable(record), indent=1, allow_nan=False))
    print(f"fits → {os.path.join(out_dir, 'fits.json')}; {len(made)} figures")
    return record


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _SWEEP.value or not _OUT.value:
        raise app.UsageError("--sweep_dir and --out_dir are required.")
    analyse(_SWEEP.value, _OUT.value, vocab_size=_VOCAB.value, k=_K.value,
            window_log2=_WINDOW.value, target_log2_norm=_TARGET.value,
            allow_partial=_ALLOW_PARTIAL.value, loss_key=_LOSS.value,
            drop_extrapolated=_DROP_EXTRAPOLATED.value, free_c=_FREE_C.value)


if __name__ == "__main__":
    app.run(main)

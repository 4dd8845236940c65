"""The long-horizon norm-transfer report (issues 14, 25): does the optimal norm stop moving?

    python experiments/horizon_study.py \
        --sweep_dir=workdirs/sweeps/cpu_horizon,workdirs/sweeps/cpu_horizon_seeds,... \
        --out_dir=experiments/results/cpu_horizon --loss=eval_loss --window_log2=0.25 \
        [--readouts=eval_loss@0,loss@0.25] [--include_edges] [--allow_partial]

Runs `plot.py`'s analysis (table.csv, fits.json, the paper's figures; its flags apply), then
reads the primary setup from D = 2^--min_log2_D on by the decision rule of REPORT.md
(`scion_jax.analysis.transfer.read_out`): per horizon the continuous B*(D), the optimal log2
norm at it with bootstrap 95% intervals, fixed-c and free-c fits side by side, η- and B-edge
marks; the slope over the longest three horizons and the verdict. The primary read-out is
the lowest seed's runs with --loss and --window_log2; beside it every other seed's own fits
(where it has 3 η per B) and its points against the base seed's (`seed_pairs`),
the same with edges included, and each --readouts entry (`loss_key@window_log2`; a table.csv
source collected with another window is left out of that read-out). Then B*(D) and η*(D)
exponents, per-B η* slopes over D and the global α, β over the fits' optima (edges left
out unless --include_edges); η* beyond 2^--fit_max_log2_D predicted from the shorter
horizons (iso-norm relation vs power law); the width check; each run's tokens/s. Writes
transfer.json and fig2a_norm_transfer.png beside plot.py's outputs, prints markdown tables.
"""

from __future__ import annotations

import glob
import json
import math
import os
import warnings

import numpy as np
import plot
from absl import app, flags

from scion_jax.analysis import figures, fits, transfer
from scion_jax.analysis.collect import (
    SweepWarning,
    atomic_write_text,
    column,
    is_table_source,
)
from scion_jax.analysis.predict import predict_held_out
from scion_jax.analysis.regression import line_fit
from scion_jax.train.metrics import read_rows

_MIN_D = flags.DEFINE_float("min_log2_D", 17, "The shortest horizon reported.")
_FIT_MAX_D = flags.DEFINE_float("fit_max_log2_D", 21,
                                "η* prediction check: fit on D ≤ 2^this, predict the longer.")
_KS = flags.DEFINE_list("ks", ["5", "7", "9"],
                        "Points per parabola fit: each k fitting a distinct set of points is "
                        "reported beside --k.")
_READOUTS = flags.DEFINE_list(
    "readouts", [], "Read-outs beside the primary, each `loss_key@window_log2` (e.g. "
    "`eval_loss@0` unwindowed, `loss@0.25` the training loss over the trailing window).")
_INCLUDE_EDGES = flags.DEFINE_bool(
    "include_edges", False, "Keep η-edge optima and B-edge horizons in the fits and the verdict.")
_N_DRAWS = flags.DEFINE_integer("n_draws", 2000, "Bootstrap draws of the evaluation residuals.")


def run_times(sources: list[str], runs: set[str]) -> list[dict]:
    """Per run: tokens trained, its speed (the median of the logged tokens/s, so that a
    paused or resumed interval does not count) and the wall time at that speed. Runs of the
    table `runs` taken from a table.csv source are timed by the transfer.json beside it."""
    out = []
    for d in (s for s in sources if not is_table_source(s)):
        for path in sorted(glob.glob(os.path.join(d, "**", "metrics.jsonl"), recursive=True)):
            rows = [r for r in read_rows(path) if r.get("tokens_per_s")]
            if not rows:
                continue
            tokens = int(rows[-1]["tokens"])
            speed = float(np.median([r["tokens_per_s"] for r in rows]))
            out.append({"run": os.path.relpath(os.path.dirname(path), os.path.dirname(d)),
                        "tokens": tokens, "tokens_per_s": speed, "wall_s": tokens / speed})
    for path in (s for s in sources if is_table_source(s)):
        beside = os.path.join(os.path.dirname(path), "transfer.json")
        if os.path.isfile(beside):
            with open(beside) as f:
                earlier = json.load(f).get("timing", {}).get("runs", [])
            timed = {t["run"] for t in out}
            out += [t for t in earlier if t["run"] in runs and t["run"] not in timed]
    return out


def _fit_record(fit) -> dict:
    """A fit as JSON, or `plot._try`'s {"error": ...} record as it is."""
    return plot.jsonable(fit) if isinstance(fit, fits.LinearFit) else fit


def _table_window(source: str) -> float | None:
    """The window a table.csv source was collected with (its fits.json)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(source)), "fits.json")) as f:
        return json.load(f).get("window_log2")


def _table(sources: list[str], window_log2: float) -> list[dict]:
    """The table of `sources` at `window_log2` from D = 2^--min_log2_D on; table.csv sources
    collected with another window are left out (their runs' metrics are gone)."""
    kept = [s for s in sources if not is_table_source(s) or _table_window(s) == window_log2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepWarning)
        table = plot._collect_all(kept, window_log2=window_log2,
                                  allow_partial=plot._ALLOW_PARTIAL.value)
    return [r for r in table if r["log2_D"] >= _MIN_D.value]


def _reading(table: list[dict], loss: str, window: float, seed, **kw) -> dict:
    """`transfer.read_out` of one seed's table, labelled, JSON-ready (its optima kept aside
    under `_optima`)."""
    out = transfer.read_out(table, k=plot._K.value, ks=[int(k) for k in _KS.value],
                            loss_key=loss, n_draws=_N_DRAWS.value, vocab_size=plot._VOCAB.value,
                            **kw)
    optima = out["fixed_c"].pop("optima")
    out["free_c"].pop("optima")
    return {"loss": loss, "window_log2": window, "seed": seed, **out, "_optima": optima}


def _scaling(reading: dict, table: list[dict], include_edges: bool) -> dict:
    """B*(D), η*(D) at the continuous B*, per-B η* slopes over D, the global α, β and the
    η* prediction check, over the fixed-c optima and horizons the fits use."""
    used = [r for r in reading["fixed_c"]["horizons"] if r["used"]]
    d = [r["log2_D"] for r in used]
    out: dict = {"horizons": d}
    out["b_star"] = _fit_record(plot._try("B*(D)", lambda: line_fit(
        d, [r["log2_b_star"] for r in used], "exponent")))
    out["eta_star"] = _fit_record(plot._try("η*(D)", lambda: line_fit(
        d, [r["log2_eta_star"] for r in used], "exponent")))
    optima = [o for o in reading["_optima"] if transfer.counted(o, include_edges)]
    per_b = {}
    for b in sorted({o.batch_size for o in optima}):
        mine = sorted((o for o in optima if o.batch_size == b), key=lambda o: o.log2_D)
        fit = plot._try(f"η*(D) at B {b:g}", lambda m=mine: line_fit(
            [o.log2_D for o in m], [o.log2_eta_interp for o in m], "beta"))
        last = mine[-transfer.N_LONGEST:]
        per_b[f"{b:g}"] = {"all": _fit_record(fit), "horizons": [o.log2_D for o in mine],
                           f"longest_{transfer.N_LONGEST}": line_fit(
                               [o.log2_D for o in last], [o.log2_eta_interp for o in last]
                           )["slope"] if len(last) > 1 else math.nan}
    out["per_b_eta_star"] = per_b
    out["global"] = _fit_record(plot._try("global fit", lambda: fits.fit_global(
        optima, eta="log2_eta_interp")))
    held = lambda _, log2_d: log2_d > _FIT_MAX_D.value
    if any(held(0, o.log2_D) for o in optima) and any(not held(0, o.log2_D) for o in optima):
        rows = figures.in_setup(table, optima[0].setup)
        checks = predict_held_out(rows, optima, held)
        err = lambda k: [c[k] - c["log2_eta_measured"] for c in checks]
        out["predict_check"] = {
            "fit_max_log2_D": _FIT_MAX_D.value, "rows": checks,
            "rms_log2_error": {k: float(np.sqrt(np.mean(np.square(err(k))))) if checks else None
                               for k in ("log2_eta_iso_norm", "log2_eta_power_law")}}
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    sweep_dirs, out_dir = plot._SWEEP.value, plot._OUT.value
    if not sweep_dirs or not out_dir:
        raise app.UsageError("--sweep_dir and --out_dir are required.")
    loss, window, edges = plot._LOSS.value, plot._WINDOW.value, _INCLUDE_EDGES.value
    extra = []
    for spec in _READOUTS.value:
        key, _, w = spec.partition("@")
        if not key or not w:
            raise app.UsageError(f"--readouts entry {spec!r} is not loss_key@window_log2")
        extra.append((key, float(w)))
    plot.analyse(sweep_dirs, out_dir, k=plot._K.value, window_log2=window,
                 vocab_size=plot._VOCAB.value,
                 allow_partial=plot._ALLOW_PARTIAL.value, loss_key=loss)
    table = _table(sweep_dirs, window)
    seeds = transfer.seed_tables(table)
    base_seed, base = next(iter(seeds.items()))
    primary = _reading(base, loss, window, base_seed, include_edges=edges)
    if not primary["_optima"]:
        raise SystemExit(f"No LR sweep of seed {base_seed} has 3 runs with {loss!r}.")
    setup = primary["_optima"][0].setup  # every read-out is of the primary's setup
    readouts = [_reading(figures.in_setup(t, setup), loss, window, s, include_edges=edges)
                for s, t in list(seeds.items())[1:]]
    readouts.append(_reading(base, loss, window, base_seed, include_edges=not edges))
    for key, w in extra:
        for s, t in transfer.seed_tables(table if w == window else _table(sweep_dirs, w)).items():
            t = figures.in_setup(t, setup)
            if np.isfinite(column(t, key)).any():
                readouts.append(_reading(t, key, w, s, include_edges=edges))
    for r in readouts:
        if not r["_optima"]:
            print(f"{r['loss']} at window 2^-{r['window_log2']:g}, seed {r['seed']}: no LR "
                  "sweep with 3 runs (the runs' metrics are gone, or too few η)")
    readouts = [r for r in readouts if r["_optima"]]
    record = {"sweep_dirs": sweep_dirs, "loss": loss, "window_log2": window, "k": plot._K.value,
              "ks": [int(k) for k in _KS.value], "include_edges": edges,
              "n_draws": _N_DRAWS.value, "min_log2_D": _MIN_D.value,
              "rule": {"plateau_max": transfer.PLATEAU_MAX, "rising_min": transfer.RISING_MIN,
                       "n_longest": transfer.N_LONGEST},
              "verdict": primary["verdict"], "decided_by": primary.get("decided_by"),
              "primary": primary, "readouts": readouts,
              "scaling": _scaling(primary, base, edges)}
    record["seed_pairs"] = {str(s): transfer.seed_pairs(
        figures.in_setup(base, setup), figures.in_setup(t, setup), loss_key=loss)
        for s, t in list(seeds.items())[1:]}
    record["width_check"] = transfer.width_check(base, k=plot._K.value, loss_key=loss,
                                                 vocab_size=plot._VOCAB.value, include_edges=edges)
    times = run_times(sweep_dirs, {r["run"] for r in table})
    total_tokens, total_wall = sum(t["tokens"] for t in times), sum(t["wall_s"] for t in times)
    record["timing"] = {"runs": times, "tokens": total_tokens, "wall_s": total_wall,
                        "tokens_per_s": total_tokens / total_wall if total_wall else None}
    for r in (primary, *readouts):
        r.pop("_optima")
    atomic_write_text(os.path.join(out_dir, "transfer.json"),
                      json.dumps(plot.jsonable(record), indent=1, allow_nan=False))
    figures.fig_norm_transfer(primary, os.path.join(out_dir, "fig2a_norm_transfer.png"))
    _print_report(record)


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, fmt)


def _print_reading(r: dict) -> None:
    print(f"\n{r['loss']}, window 2^-{r['window_log2']:g}, seed {r['seed']}"
          f"{', edges included' if r['include_edges'] else ''}: **{r['verdict']}**")
    print("\n| log2 D | B* discrete | log2 B* (± se) | x at B*, c = ln V [95%] | free c [95%] "
          "| x at discrete B* | loss* | log2 η* | η-edge B | B edge |")
    print("|---:|---:|---|---|---|---:|---:|---:|---|---|")
    for a, b in zip(r["fixed_c"]["horizons"], r["free_c"]["horizons"], strict=True):
        edges = ", ".join(f"{p['batch_size']:g}" for p in a["per_b"] if p["eta_edge"]) or "–"
        b_edge = a["b_edge"] or "–"
        if b["b_edge"] != a["b_edge"]:  # the free-c optima can put B* elsewhere
            b_edge += f"; free c: {b['b_edge'] or '–'}"
        print(f"| {a['log2_D']:g} | {_f(a['b_star'], 'g')} | {_f(a['log2_b_star'])} "
              f"(± {_f(a['log2_b_star_se'])}) | {_f(a['x_star'])} [{_f(a['x_lo'])}, "
              f"{_f(a['x_hi'])}] | {_f(b['x_star'])} [{_f(b['x_lo'])}, {_f(b['x_hi'])}] | "
              f"{_f(a['x_discrete'])} | {_f(a['loss_star'], '.3f')} | {_f(a['log2_eta_star'])} "
              f"| {edges} | {b_edge} |")
    for name in ("fixed_c", "free_c"):
        s = r[name]["slope"]
        print(f"{name}: slope {_f(s['per_doubling'], '+.3f')} [{_f(s['lo'], '+.3f')}, "
              f"{_f(s['hi'], '+.3f')}] per doubling over 2^{s['horizons']} → "
              f"{r[name]['verdict']}")
    if r.get("decided_by"):
        print(f"decided by: {r['decided_by']}")
    print("distinct k: " + ", ".join(f"k {k['k']}: slope {_f(k['slope'], '+.3f')}"
                                     for k in r["ks"]))


def _print_report(record: dict) -> None:
    _print_reading(record["primary"])
    for r in record["readouts"]:
        _print_reading(r)
    for seed, sp in record["seed_pairs"].items():
        if sp["pairs"]:
            d_loss = [p["d_loss"] for p in sp["pairs"]]
            d_norm = max(abs(p["d_log2_norm"]) for p in sp["pairs"])
            flips = [f"B {b['batch_size']:g} at 2^{b['log2_D']:g} ({b['log2_lr_base']:g} → "
                     f"{b['log2_lr_other']:g})" for b in sp["best"] if not b["same_best"]]
            print(f"seed {seed} against the base seed at {len(d_loss)} points: {sp['loss']} "
                  f"{min(d_loss):+.3f} … {max(d_loss):+.3f}, |Δ log2 norm| ≤ {d_norm:.2f}; "
                  f"best log2 η differs at: {', '.join(flips) or 'none'}")
    sc = record["scaling"]
    for key in ("b_star", "eta_star"):
        f = sc[key]
        if "error" not in f:
            print(f"{key}(D) exponent over 2^{sc['horizons']}: {f['exponent']:+.3f} ± "
                  f"{_f(f['se']['exponent'], '.3f')}")
    for b, f in sc["per_b_eta_star"].items():
        if "error" not in f["all"]:
            print(f"B {b}: log2 η* slope over D {f['all']['beta']:+.3f} ± "
                  f"{_f(f['all']['se']['beta'], '.3f')} (2^{f['horizons']}); over the longest "
                  f"{transfer.N_LONGEST}: {_f(f[f'longest_{transfer.N_LONGEST}'], '+.3f')}")
    g = sc["global"]
    if "error" not in g:
        print(f"global: α {g['alpha']:.3f} ± {_f(g['se']['alpha'], '.3f')}, β {g['beta']:.3f} ± "
              f"{_f(g['se']['beta'], '.3f')}, R² {g['r2']:.2f} (n {g['n']})")
    check = sc.get("predict_check")
    if check:
        rms = check["rms_log2_error"]
        print(f"η* beyond 2^{check['fit_max_log2_D']:g}: RMS log2 error iso-norm "
              f"{_f(rms['log2_eta_iso_norm'])}, power law {_f(rms['log2_eta_power_law'])} "
              f"({len(check['rows'])} optima)")
    for w in record["width_check"]:
        widths = {k: v for k, v in w.items() if k not in ("log2_D", "batch_size")}
        print(f"width check at D = 2^{w['log2_D']:g}, B {w['batch_size']:g}: optimal log2 norm "
              + ", ".join(f"{v:.2f} (d_model {d})" for d, v in sorted(widths.items())))
    t = record["timing"]
    if t["wall_s"]:
        print(f"{len(t['runs'])} runs, {t['tokens'] / 1e6:.0f}M tokens in "
              f"{t['wall_s'] / 3600:.1f} h of training summed over runs: "
              f"{t['tokens_per_s']:,.0f} tokens/s per run")
    print(f"\nverdict: {record['verdict']}")


if __name__ == "__main__":
    app.run(main)

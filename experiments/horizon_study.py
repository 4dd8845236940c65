"""The long-horizon norm-transfer report (issue 14): does the optimal norm stop moving with D?

    python experiments/horizon_study.py \
        --sweep_dir=workdirs/sweeps/cpu_horizon,workdirs/sweeps/cpu_horizon_seeds,... \
        --out_dir=experiments/results/cpu_horizon --loss=eval_loss [--allow_partial]

Runs `plot.py`'s analysis (table.csv, fits.json, the paper's figures; its flags apply), then
for the primary setup from D = 2^--min_log2_D on: the optimal log2 norm at B*(D) with error
bars over seeds × k ∈ --ks (`scion_jax.analysis.transfer`), the longest plateau within ±0.3
and the verdict; B*(D) and η*(D) exponents and the global α, β; η* at the horizons beyond
2^--fit_max_log2_D predicted from the shorter ones by the iso-norm relation and by the power
law; the width check (setups differing in d_model); each run's wall time and tokens/s.
Writes transfer.json and fig2a_norm_transfer.png beside plot.py's outputs, prints a
markdown table for REPORT.md.
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
from scion_jax.analysis.collect import SweepWarning, atomic_write_text, is_table_source
from scion_jax.analysis.predict import predict_held_out
from scion_jax.analysis.regression import line_fit
from scion_jax.train.metrics import read_rows

_MIN_D = flags.DEFINE_float("min_log2_D", 17, "The shortest horizon reported.")
_FIT_MAX_D = flags.DEFINE_float("fit_max_log2_D", 21,
                                "η* prediction check: fit on D ≤ 2^this, predict the longer.")
_KS = flags.DEFINE_list("ks", ["5", "7", "9"], "Points per parabola fit: one estimate each.")
_TOL = flags.DEFINE_float("tol", 0.3, "Plateau: every optimal log2 norm within ± this.")


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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    sweep_dirs, out_dir = plot._SWEEP.value, plot._OUT.value
    if not sweep_dirs or not out_dir:
        raise app.UsageError("--sweep_dir and --out_dir are required.")
    plot.analyse(sweep_dirs, out_dir, k=plot._K.value, window_log2=plot._WINDOW.value,
                 allow_partial=plot._ALLOW_PARTIAL.value, loss_key=plot._LOSS.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepWarning)
        table = plot._collect_all(sweep_dirs, window_log2=plot._WINDOW.value,
                                  allow_partial=plot._ALLOW_PARTIAL.value)
    table = [r for r in table if r["log2_D"] >= _MIN_D.value]
    ks = [int(k) for k in _KS.value]
    rows = transfer.horizon_estimates(table, ks=ks, loss_key=plot._LOSS.value)
    plateau = transfer.longest_plateau(rows, tol=_TOL.value)
    base = transfer.base_seed_table(table)  # one fit per (setup, B, D): the base seed's runs
    optima = fits.fit_optima(base, k=plot._K.value, loss_key=plot._LOSS.value)
    primary = next(iter(fits.by_setup(optima).values()), [])
    primary_rows = figures.in_setup(base, primary[0].setup) if primary else []

    record = {"sweep_dirs": sweep_dirs, "ks": ks, "tol": _TOL.value, "horizons": rows,
              "plateau": plateau,
              "verdict": "constant" if plateau["n"] >= 3 else "not constant"}
    # The trend over all horizons: optimal log2 norm per doubling of D (0 if it transfers).
    record["trend"] = _fit_record(plot._try("trend", lambda: line_fit(
        [r["log2_D"] for r in rows], [r["x_star"] for r in rows], slope="per_doubling")))
    scaling = plot._try("B*(D), η*(D)", lambda: fits.fit_horizon_scaling(primary))
    record["horizon_scaling"] = (
        scaling if "error" in scaling else {k: _fit_record(v) for k, v in scaling.items()})
    record["global"] = _fit_record(plot._try("global fit", lambda: fits.fit_global(primary)))
    held = lambda _, log2_d: log2_d > _FIT_MAX_D.value
    if any(held(0, o.log2_D) for o in primary) and any(not held(0, o.log2_D) for o in primary):
        checks = predict_held_out(primary_rows, primary, held)
        err = lambda k: [c[k] - c["log2_eta_measured"] for c in checks]
        record["predict_check"] = {
            "fit_max_log2_D": _FIT_MAX_D.value, "rows": checks,
            "rms_log2_error": {k: float(np.sqrt(np.mean(np.square(err(k))))) if checks else None
                               for k in ("log2_eta_iso_norm", "log2_eta_power_law")}}
    record["width_check"] = transfer.width_check(base, k=plot._K.value, loss_key=plot._LOSS.value)
    times = run_times(sweep_dirs, {r["run"] for r in table})
    total_tokens, total_wall = sum(t["tokens"] for t in times), sum(t["wall_s"] for t in times)
    record["timing"] = {"runs": times, "tokens": total_tokens, "wall_s": total_wall,
                        "tokens_per_s": total_tokens / total_wall if total_wall else None}
    atomic_write_text(os.path.join(out_dir, "transfer.json"),
                      json.dumps(plot.jsonable(record), indent=1, allow_nan=False))
    path = os.path.join(out_dir, "fig2a_norm_transfer.png")
    figures.fig_norm_transfer(rows, primary, path, plateau=plateau, tol=_TOL.value)
    _print_report(record)


def _print_report(record: dict) -> None:
    print("\n| log2 D | B* (votes) | optimal log2 norm [min, max] | log2 η* | loss* | in range |")
    print("|---:|---:|---|---:|---:|---|")
    for r in record["horizons"]:
        print(f"| {r['log2_D']:g} | {r['b_star']:g} ({r['b_star_votes']}/{r['n']}) | "
              f"{r['x_star']:.2f} [{r['x_lo']:.2f}, {r['x_hi']:.2f}] | {r['log2_eta_star']:.2f} "
              f"| {r['loss_star']:.3f} | {'yes' if r['in_range'] else 'no'} |")
    p = record["plateau"]
    if p["n"]:
        print(f"\nlongest plateau within ±{record['tol']:g}: {p['n']} horizons, "
              f"2^{p['start']:g}…2^{p['end']:g}, centre {p['centre']:.2f} → {record['verdict']}")
    trend = record["trend"]
    if "error" not in trend and trend["se"]["per_doubling"] is not None:
        print(f"trend over every horizon: {trend['per_doubling']:+.2f} ± "
              f"{trend['se']['per_doubling']:.2f} in log2 norm per doubling of D")
    check = record.get("predict_check")
    if check:
        rms = check["rms_log2_error"]
        print(f"η* beyond 2^{check['fit_max_log2_D']:g}: RMS log2 error iso-norm "
              f"{rms['log2_eta_iso_norm']:.2f}, power law {rms['log2_eta_power_law']:.2f} "
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
    if not math.isfinite(p.get("centre", math.nan)):
        print("no plateau: the optimal norm moves by more than ±tol between every two horizons")


if __name__ == "__main__":
    app.run(main)

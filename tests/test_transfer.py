"""Norm transfer across horizons (scion_jax.analysis.transfer): optimal norm at B*(D) with
error bars over seeds × k, and the plateau verdict, on synthetic sweeps with known truth."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from scion_jax.analysis import collect, figures, fit_optima, transfer
from scion_jax.analysis.synthetic import Truth, make_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("transfer")
    make_sweep(str(d), log2_lrs=tuple(np.arange(-12.0, 0.01, 0.5)),
               batch_sizes=(32, 64, 128, 256), max_log2_tokens=30)
    return str(d)


@pytest.fixture(scope="module")
def table(sweep_dir):
    return [dict(r, seed=0) for r in collect(sweep_dir, horizons=range(26, 31))]


def test_horizon_study_cli_reports_the_plateau_and_the_held_out_check(sweep_dir, tmp_path):
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "horizon_study.py"),
         f"--sweep_dir={sweep_dir}", f"--out_dir={out}", "--min_log2_D=24",
         "--fit_max_log2_D=28"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((out / "transfer.json").read_text())
    assert record["verdict"] == "constant" and record["plateau"]["n"] == 7  # D = 2^24…2^30
    rms = record["predict_check"]["rms_log2_error"]  # the synthetic laws are exact
    assert rms["log2_eta_iso_norm"] < 0.05 and rms["log2_eta_power_law"] < 0.05
    assert set(record["horizon_scaling"]) == {"b_star", "eta_star"}
    assert (out / "fig2a_norm_transfer.png").stat().st_size > 0
    assert "longest plateau within ±0.3: 7 horizons" in run.stdout
    assert abs(record["trend"]["per_doubling"]) < 0.05  # the synthetic optimal norm is fixed
    assert "trend over every horizon: " in run.stdout


def test_optimal_norm_at_b_star_is_the_truth_at_every_horizon(table, tmp_path):
    rows = transfer.horizon_estimates(table)
    assert [r["log2_D"] for r in rows] == [26, 27, 28, 29, 30]
    for r in rows:
        assert r["n"] == 3 and r["in_range"]
        assert abs(r["x_star"] - Truth().x00) < 0.2, r
    plateau = transfer.longest_plateau(rows)
    assert plateau["n"] == 5 and abs(plateau["centre"] - Truth().x00) < 0.2
    path = figures.fig_norm_transfer(rows, fit_optima(table), str(tmp_path / "f.png"),
                                     plateau=plateau)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_second_seed_replaces_its_runs_and_widens_the_error_bars(table):
    # seed 1 repeats every run with a loss 0.01 lower at the largest η of each sweep only:
    # its optimum moves towards larger norms, seed 0's does not.
    top = {}
    for r in table:
        key = (r["batch_size"], r["log2_D"])
        top[key] = max(top.get(key, -math.inf), r["log2_lr"])
    seed1 = [dict(r, seed=1, loss=r["loss"] - 0.01 * (r["log2_lr"] >= top[(r["batch_size"],
             r["log2_D"])] - 2.0)) for r in table]
    tables = transfer.seed_tables(table + seed1)
    assert sorted(tables) == [0, 1] and len(tables[1]) == len(table)
    assert all(t["seed"] == 1 for t in tables[1])
    rows = transfer.horizon_estimates(table + seed1)
    assert all(r["n"] == 6 for r in rows)
    assert any(r["x_hi"] - r["x_lo"] > 0.05 for r in rows)
    alone = {r["log2_D"]: r["x_star"] for r in transfer.horizon_estimates(table)}
    assert all(r["x_hi"] >= alone[r["log2_D"]] - 1e-9 for r in rows)


def _rows(xs, in_range=None):
    in_range = in_range or [True] * len(xs)
    return [{"log2_D": 17 + i, "x_star": x, "in_range": ok}
            for i, (x, ok) in enumerate(zip(xs, in_range, strict=True))]


def test_longest_plateau():
    rising = transfer.longest_plateau(_rows([4.0, 4.7, 5.4, 6.1, 6.8]))
    assert rising["n"] == 1
    levelling = transfer.longest_plateau(_rows([4.0, 5.0, 6.0, 6.4, 6.2, 6.55, 7.5]))
    assert (levelling["start"], levelling["end"], levelling["n"]) == (19, 22, 4)
    assert levelling["centre"] == pytest.approx(6.275)
    broken = transfer.longest_plateau(_rows([6.0, 6.1, 6.0, 6.1], [True, True, False, True]))
    assert broken["n"] == 2
    steps = transfer.longest_plateau(_rows([4.7, 5.25, 5.77, 5.75, 6.19, 6.55, 6.65]))
    assert (steps["start"], steps["end"]) == (21, 23)  # two of 3: the later one


def test_run_times_come_from_metrics_and_from_beside_a_table_source(tmp_path):
    """Runs on disk are timed from their logged tokens/s; runs taken from a table.csv by
    the transfer.json beside it (only those in the analysed table, disk runs first)."""
    run = tmp_path / "sweep" / "x"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 1, "tokens": 100, "tokens_per_s": 10.0},
        {"step": 2, "tokens": 200, "tokens_per_s": 30.0},
        {"step": 3, "tokens": 300, "tokens_per_s": 20.0}]))
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    timed = [{"run": n, "tokens": 8, "tokens_per_s": 4.0, "wall_s": 2.0}
             for n in ("s/a", "s/b", "sweep/x")]
    (earlier / "transfer.json").write_text(json.dumps({"timing": {"runs": timed}}))
    code = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'experiments')!r}); "
            f"import json, horizon_study as h; print(json.dumps(h.run_times("
            f"[{str(earlier / 'table.csv')!r}, {str(tmp_path / 'sweep')!r}], "
            f"{{'s/a', 'sweep/x'}})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [
        {"run": "sweep/x", "tokens": 300, "tokens_per_s": 20.0, "wall_s": 15.0}, timed[0]]


def _with_seed(src, dst, seed, batch_sizes=None, tilt=0.0):
    """Copies of `src`'s runs (those at `batch_sizes`) with config seed `seed`, their losses
    raised by `tilt`·log2 η (which moves every optimum to smaller η)."""
    for name in sorted(os.listdir(src)):
        with open(os.path.join(src, name, "config.json")) as f:
            cfg = json.load(f)
        if batch_sizes and cfg["batch_size"] not in batch_sizes:
            continue
        cfg["seed"] = seed
        tilt_lr = tilt * math.log2(cfg["optimizer.learning_rate"])
        os.makedirs(os.path.join(dst, name))
        with open(os.path.join(dst, name, "config.json"), "w") as f:
            json.dump(cfg, f)
        with open(os.path.join(src, name, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
        for r in rows[1:]:
            for key in ("loss", "eval_loss"):
                if key in r:
                    r[key] += tilt_lr
        with open(os.path.join(dst, name, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def test_point_fits_and_the_width_check_use_the_base_seed_only(tmp_path):
    """A second seed repeating some runs changes the error bars, never the one fit per
    (setup, B, D): B*(D), η*(D), the global fit, fits.json and the width check are those of
    the base seed alone. The width check compares d_model 256 and 512 at every (D, B),
    where the synthetic optimal norm is the same."""
    widths = tmp_path / "widths"
    make_sweep(str(widths), log2_lrs=tuple(np.arange(-12.0, 0.01, 0.5)),
               batch_sizes=(32, 64, 128), widths=(256, 512), max_log2_tokens=29)
    _with_seed(widths, tmp_path / "s0", 0)
    _with_seed(widths, tmp_path / "s1", 1, batch_sizes=(64,), tilt=0.05)
    records = {}
    for name, dirs in (("alone", "s0"), ("both", "s0,s1")):
        out = tmp_path / name
        run = subprocess.run(
            [sys.executable, os.path.join(ROOT, "experiments", "horizon_study.py"),
             "--sweep_dir=" + ",".join(str(tmp_path / d) for d in dirs.split(",")),
             f"--out_dir={out}", "--min_log2_D=24", "--fit_max_log2_D=27"],
            capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        records[name] = (json.loads((out / "transfer.json").read_text()),
                         json.loads((out / "fits.json").read_text()), run.stdout)
    (alone, fits_alone, _), (both, fits_both, stdout) = records["alone"], records["both"]
    for key in ("horizon_scaling", "global", "predict_check", "width_check"):
        assert both[key] == alone[key], key
    assert fits_both["setups"] == fits_alone["setups"]
    assert fits_both["seeds"] == {"fitted": 0, "other": [1]}
    assert fits_both["n_runs"] == fits_alone["n_runs"] + 50  # seed 1's runs are in table.csv
    assert any(a["x_hi"] - a["x_lo"] > b["x_hi"] - b["x_lo"] + 0.05
               for a, b in zip(both["horizons"], alone["horizons"], strict=True))
    checked = both["width_check"]
    assert {(w["log2_D"], w["batch_size"]) for w in checked} == {
        (d, b) for d in range(24, 30) for b in (32, 64, 128)}
    for w in checked:
        truth = Truth().x_star(math.log2(w["batch_size"]), w["log2_D"])
        assert abs(w["256"] - truth) < 0.2 and abs(w["512"] - truth) < 0.2, w
    assert "width check at D = 2^29, B 64: optimal log2 norm " in stdout

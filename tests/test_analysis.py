"""The analysis layer (scion_jax.analysis, experiments/plot.py) on sweeps with known optima.

Synthetic sweeps (scion_jax.analysis.synthetic) have a closed-form output norm and a loss
parabola in log2 norm with known vertex, so every fit has a true answer (PAPER.md §5–6).
No jax anywhere: the import test runs with jax made unimportable.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from scion_jax.analysis import figures
from scion_jax.analysis.collect import (
    SweepWarning,
    collect,
    column,
    horizon_rows,
    read_csv,
    read_table,
    run_identity,
    to_csv_text,
    write_csv,
)
from scion_jax.analysis.fits import (
    Optimum,
    best_per_horizon,
    compare_setups,
    first_reach,
    fit_first_reach,
    fit_global,
    fit_horizon_scaling,
    fit_optima,
    fit_parabola,
    lr_scale_ranking,
    nearest_to_min,
    norm_vs_batch,
    optimal_norm_band,
    scale_label,
)
from scion_jax.analysis.regression import line_fit
from scion_jax.analysis.synthetic import Truth, make_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HORIZONS = range(24, 33, 2)  # even k: B*(D) = 2^(k/2 − 7) lies exactly on the batch grid
TRUTH = Truth()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The full (η, B) grid: 53 LRs (2^0.25 apart) × 7 batch sizes, one width."""
    d = str(tmp_path_factory.mktemp("sweep"))
    make_sweep(d, noise=1e-4, seed=1)
    return d


@pytest.fixture(scope="module")
def table(sweep):
    return collect(sweep, horizons=HORIZONS)


@pytest.fixture(scope="module")
def optima(table):
    return fit_optima(table)


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    """Coarser grid, two widths, and an LR-scale sub-sweep (Fig. 2b and Fig. 4 have data)."""
    d = str(tmp_path_factory.mktemp("small"))
    make_sweep(os.path.join(d, "widths"), log2_lrs=tuple(np.arange(-13.0, 0.01, 0.5)),
               batch_sizes=(16, 64, 256, 1024), widths=(256, 512), max_log2_tokens=30)
    make_sweep(os.path.join(d, "scales"), log2_lrs=tuple(np.arange(-10.0, 2.01, 0.5)),
               batch_sizes=(64, 256), max_log2_tokens=26,
               lr_scales=[(1, 1, 1), (1, 0.125, 1), (1, 0.25, 1), (0.5, 0.125, 1),
                          (1, 0.125, 0.5), (1, 0.5, 0.5)])
    return d


# --- collect ---------------------------------------------------------------------------------

def test_analysis_imports_without_jax():
    code = ("import sys; sys.modules['jax'] = None; import scion_jax.analysis, "
            "scion_jax.analysis.figures, scion_jax.analysis.synthetic; "
            "assert sys.modules['jax'] is None; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_table_rows_match_the_truth(table):
    runs = {r["run"] for r in table}
    assert len(runs) == 53 * 7 and len(table) == len(runs) * len(HORIZONS)
    for r in table[::97]:
        log2_b = math.log2(r["batch_size"])
        assert r["tokens"] == r["D"] == 2.0 ** r["log2_D"]  # powers of two are logged exactly
        x = TRUTH.log2_norm(r["log2_lr"], log2_b, r["log2_D"])
        assert r["log2_norm"] == pytest.approx(x, abs=1e-9)
        assert r["output_norm"] == pytest.approx(2.0**x, rel=1e-9)
        clean = TRUTH.loss(r["log2_D"], log2_b, x)
        assert r["loss"] == pytest.approx(clean, abs=1e-3)
        assert r["eval_loss"] == pytest.approx(clean + 0.05, abs=1e-9)
        assert r["optimizer.learning_rate"] == 2.0 ** r["log2_lr"]
        assert r["model.vocab_size"] == 256 and r["seq_len"] == 1024


def _rows(n, norm_every=1, eval_every=None):
    rows = []
    for s in range(1, n + 1):
        row = {"step": s, "tokens": 100 * s, "loss": float(s), "lr": 0.1}
        if s % norm_every == 0:
            row["output_norm"] = 2.0 * s
            row["l1_to_rms/embed/embedding"] = 3.0 * s
            row["rms_to_rms/layers/0/mlp/w1/kernel"] = 1.0 * s
            row["rms_to_rms/layers/1/mlp/w1/kernel"] = 2.0 * s
        if eval_every and s % eval_every == 0:
            row["eval_loss"] = 10.0 * s
        rows.append(row)
    return rows


def test_horizon_rows_trailing_window_norm_at_or_after_and_overshoot():
    cfg = {"optimizer.learning_rate": 0.25, "batch_size": 8}
    # D = 2^9 = 512: first logged tokens ≥ 512 is step 6 (600 tokens).
    (r,) = horizon_rows(cfg, _rows(10, norm_every=4, eval_every=5), horizons=[9],
                        max_overshoot=None)
    assert (r["step"], r["tokens"], r["loss"]) == (6, 600.0, 6.0)
    assert (r["norm_step"], r["output_norm"], r["log2_norm"]) == (8, 16.0, 4.0)  # at or after
    assert (r["input_norm"], r["hidden_norm"]) == (24.0, 12.0)  # same step; hidden: the mean
    assert r["eval_loss"] == 100.0  # the first eval at or after D: step 10
    (r,) = horizon_rows(cfg, _rows(10, norm_every=4, eval_every=5), horizons=[9])
    assert r["loss"] == 6.0  # 600 ≤ 1.5·512, but the norm (800) and eval (1000) are too late
    assert math.isnan(r["eval_loss"]) and math.isnan(r["output_norm"])
    assert math.isnan(r["input_norm"]) and math.isnan(r["hidden_norm"])
    # Trailing windows in log2 tokens: D = 512, from 512·2^-w to step 6 (600 tokens).
    (r,) = horizon_rows(cfg, _rows(10), horizons=[9], window_log2=0.5)
    assert r["loss"] == pytest.approx(5.0)  # ≥ 362 tokens: steps 4, 5, 6
    (r,) = horizon_rows(cfg, _rows(10), horizons=[9], window_log2=0.1)
    assert r["loss"] == pytest.approx(5.5)  # ≥ 478 tokens: steps 5, 6
    (r,) = horizon_rows(cfg, _rows(10, eval_every=2), horizons=[9], window_log2=1.0)
    assert r["loss"] == pytest.approx(4.5) and r["eval_loss"] == pytest.approx(50.0)  # 3..6; 4, 6
    (r,) = horizon_rows(cfg, _rows(12), horizons=[10], window_log2=0.25)
    assert r["step"] == 11 and r["loss"] == pytest.approx(10.0)  # ≥ 861 tokens: steps 9..11
    with pytest.raises(ValueError, match="window_log2 must be ≥ 0"):
        horizon_rows(cfg, _rows(10), window_log2=-1.0)
    assert r["log2_lr"] == -2.0 and r["log2_B"] == 3.0
    assert horizon_rows(cfg, _rows(10), horizons=[3]) == []  # 100 tokens > 1.5·8
    # default horizons 2^7..2^9 (100..1000 tokens logged); 2^7 is dropped: 200 > 1.5·128
    assert [r["log2_D"] for r in horizon_rows(cfg, _rows(10))] == [8, 9]


def test_every_held_out_loss_is_read_over_its_own_evaluations():
    """A second held-out set (`eval_spread_loss`, evaluated on other steps) gets its own
    column, windowed like `eval_loss`; it is a measurement, not part of what a run is."""
    cfg = {"optimizer.learning_rate": 0.25, "batch_size": 8}
    rows = _rows(10, eval_every=2)
    for r in rows:
        if r["step"] % 3 == 0:
            r["eval_spread_loss"] = float(r["step"])
    (r,) = horizon_rows(cfg, rows, horizons=[9], window_log2=1.0)
    assert r["eval_loss"] == pytest.approx(50.0)  # steps 4, 6
    assert r["eval_spread_loss"] == pytest.approx(4.5)  # steps 3, 6
    (plain,) = horizon_rows(cfg, _rows(10, eval_every=2), horizons=[9], window_log2=1.0)
    assert "eval_spread_loss" not in plain
    assert run_identity(r) == run_identity(plain)


def test_nested_config_is_flattened(tmp_path):
    make_sweep(str(tmp_path), log2_lrs=[-6.0], batch_sizes=[64], max_log2_tokens=22,
               flat_config=False)
    (run,) = os.listdir(tmp_path)
    assert "optimizer" in json.load(open(tmp_path / run / "config.json"))
    t = collect(str(tmp_path))
    assert t and t[0]["optimizer.learning_rate"] == 2.0**-6
    assert t[0]["optimizer.lr_scales.hidden"] == 1.0 and t[0]["model.d_model"] == 256


def _one_run_sweep(path, n_lrs=3):
    return make_sweep(str(path), log2_lrs=[-8.0, -7.0, -6.0][:n_lrs], batch_sizes=[64],
                      max_log2_tokens=22)


def test_truncated_and_unfinished_runs_are_skipped_with_a_warning(tmp_path):
    runs = _one_run_sweep(tmp_path)
    metrics = os.path.join(runs[0], "metrics.jsonl")
    text = open(metrics).read()
    open(metrics, "w").write(text[: len(text) - 15])  # kill mid-line
    lines = open(os.path.join(runs[1], "metrics.jsonl")).read().splitlines(keepends=True)
    open(os.path.join(runs[1], "metrics.jsonl"), "w").writelines(lines[:-5])  # stopped early
    with pytest.warns(SweepWarning) as record:
        t = collect(str(tmp_path))
    messages = " | ".join(str(w.message) for w in record)
    assert "truncated last line" in messages and "unfinished" in messages
    assert {r["run"] for r in t} == {os.path.basename(runs[2])}
    with pytest.warns(SweepWarning):  # the torn run is never usable, the short one is
        t = collect(str(tmp_path), allow_partial=True)
    assert {r["run"] for r in t} == {os.path.basename(r) for r in runs[1:]}


def test_corrupt_and_missing_files_are_skipped(tmp_path):
    runs = _one_run_sweep(tmp_path)
    lines = open(os.path.join(runs[0], "metrics.jsonl")).read().splitlines(keepends=True)
    lines[3] = "{not json\n"
    open(os.path.join(runs[0], "metrics.jsonl"), "w").writelines(lines)
    os.remove(os.path.join(runs[1], "config.json"))
    os.makedirs(tmp_path / "not_started")
    shutil.copy(os.path.join(runs[2], "config.json"), tmp_path / "not_started")
    os.makedirs(os.path.join(runs[2], "checkpoints", "16"))  # not a run of its own
    with pytest.warns(SweepWarning) as record:
        t = collect(str(tmp_path))
    messages = " | ".join(str(w.message) for w in record)
    assert len(record) == 3, messages
    for reason in ("corrupt line 4", "'not_started': no metrics.jsonl", "no config.json"):
        assert reason in messages
    assert {r["run"] for r in t} == {os.path.basename(runs[2])}


def test_csv_round_trip_is_exact_and_atomic(table, tmp_path):
    path = str(tmp_path / "t.csv")
    rows = table[:50] + [{**table[0], "eval_loss": math.nan, "extra": "text"}]
    write_csv(rows, path)
    back = read_csv(path)
    assert os.listdir(tmp_path) == ["t.csv"]  # no temp file left behind
    assert len(back) == len(rows)
    for a, b in zip(rows, back, strict=True):
        assert set(a) == set(b)
        for k, v in a.items():
            assert (math.isnan(v) and math.isnan(b[k])) if isinstance(v, float) and \
                math.isnan(v) else b[k] == v
    np.testing.assert_array_equal(column(back, "loss"), column(rows, "loss"))
    assert np.isnan(column(back, "not_a_column")).all()


# --- fits ------------------------------------------------------------------------------------

def test_fit_parabola_exact_fixed_free_and_no_minimum():
    x = np.linspace(-2, 12, 29)
    y = 0.05 * (x - 7.0) ** 2 + 3.0
    c = 0.05 * 49 + 3.0
    for fit in (fit_parabola(x, y, c=c), fit_parabola(x, y)):
        assert fit.x_star == pytest.approx(7.0, abs=1e-9)
        assert fit.loss_star == pytest.approx(3.0, abs=1e-9)
        assert fit.n == 7 and fit.in_range and fit.has_minimum
    assert fit_parabola(x, y).c == pytest.approx(c)
    idx = nearest_to_min(x, y, k=7)
    np.testing.assert_array_equal(x[idx], x[np.abs(x - 7.0) <= 1.5 + 1e-9])
    concave = fit_parabola(x, -y)
    assert not concave.has_minimum and math.isnan(concave.x_star) and not concave.in_range
    with pytest.raises(ValueError, match="cannot fit"):
        fit_parabola(x[:2], y[:2])


def test_free_c_optimum_when_the_loss_does_not_pass_through_ln_v():
    """A sweep whose parabola misses the init point (0, ln V): the fixed-c vertex is biased,
    `free_c` takes the optimum from the free fit and recovers it."""
    x = np.linspace(2.0, 6.0, 9)
    table = [{"run": f"r{i}", "log2_D": 19, "batch_size": 16, "log2_norm": v, "log2_lr": v - 6,
              "loss": 0.05 * (v - 4.0) ** 2 + 2.0, "model.vocab_size": 256}
             for i, v in enumerate(x)]
    (fixed,) = fit_optima(table)
    (free,) = fit_optima(table, free_c=True)
    assert abs(fixed.x_star - 4.0) > 0.05 and fixed.fit is fixed.fixed and not fixed.free_c
    assert free.x_star == pytest.approx(4.0) and free.fit is free.free and free.free_c
    assert free.loss_star == pytest.approx(2.0) and free.fixed.c == pytest.approx(math.log(256))


def test_optima_recover_the_known_vertex(optima):
    assert len(optima) == 7 * len(HORIZONS)
    for o in optima:
        truth_x = TRUTH.x_star(o.log2_B, o.log2_D)
        truth_eta = TRUTH.log2_eta_star(o.log2_B, o.log2_D)
        assert o.ok and o.flag == "" and o.in_range
        assert o.fixed is not None and o.free is not None and o.fixed.fixed_c
        assert o.fixed.c == pytest.approx(math.log(256))
        assert o.x_star == pytest.approx(truth_x, abs=0.05)
        assert o.free.x_star == pytest.approx(truth_x, abs=0.05)
        assert o.log2_eta_interp == pytest.approx(truth_eta, abs=0.05)
        assert abs(o.log2_eta_star - truth_eta) <= 0.125 + 0.05  # half the 2^0.25 LR grid
        expected = TRUTH.loss_star(o.log2_D, o.log2_B) + TRUTH.penalty((1.0, 1.0, 1.0))
        assert o.loss_star == pytest.approx(expected, abs=0.01)


def test_no_minimum_is_flagged():
    rows = [{"log2_D": 30, "batch_size": 64, "log2_lr": float(i), "log2_norm": float(i),
             "loss": 5.0 - 0.05 * (i - 3.0) ** 2, "model.vocab_size": 256} for i in range(9)]
    (o,) = fit_optima(rows)
    assert not o.ok and not o.in_range and "no minimum" in o.flag
    assert math.isnan(o.x_star) and math.isnan(o.log2_eta_star)
    assert o.loss_emp == min(r["loss"] for r in rows)
    assert best_per_horizon([o]) == []
    # vertex at x = 10 beyond the swept norms 0..8: a minimum, but extrapolated
    for r in rows:
        r["loss"] = math.log(256) + 0.02 * r["log2_norm"] ** 2 - 0.4 * r["log2_norm"]
    (o,) = fit_optima(rows)
    assert o.ok and not o.in_range and "extrapolated" in o.flag
    assert o.x_star == pytest.approx(10.0) and o.log2_eta_star == 8.0  # nearest run


def test_global_fit_recovers_alpha_beta_gamma(optima):
    g = fit_global(optima)
    assert g["alpha"] == pytest.approx(TRUTH.alpha, abs=0.03)
    assert g["beta"] == pytest.approx(TRUTH.beta, abs=0.03)
    assert g["gamma"] == pytest.approx(TRUTH.gamma, abs=0.6)
    assert g.r2 > 0.99 and g.n == len(optima) and all(s > 0 for s in g.se)
    gi = fit_global(optima, eta="log2_eta_interp")
    np.testing.assert_allclose(gi.coef, (TRUTH.alpha, TRUTH.beta, TRUTH.gamma), atol=0.02)


def test_horizon_scaling_recovers_b_star_exponent(optima):
    best = best_per_horizon(optima)
    assert [o.log2_B for o in best] == [TRUTH.log2_b_star(d) for d in HORIZONS]
    h = fit_horizon_scaling(optima)
    assert h["b_star"]["exponent"] == pytest.approx(TRUTH.e, abs=1e-6)
    # η*(D) at B*(D): slope α·e + β
    assert h["eta_star"]["exponent"] == pytest.approx(TRUTH.alpha * TRUTH.e + TRUTH.beta,
                                                      abs=0.05)
    band = optimal_norm_band(optima)
    assert band["mean"] == pytest.approx(TRUTH.x00, abs=0.05) and band["std"] < 0.05


def test_first_reach_recovers_its_law(table):
    pts = first_reach(table, 7.0)
    assert len(pts) == 7 * len(HORIZONS) and all(p["reached"] for p in pts)
    f = fit_first_reach(pts)
    assert f["p"] == pytest.approx(-TRUTH.v, abs=0.03)
    assert f["q"] == pytest.approx(-TRUTH.w, abs=0.03)
    assert not any(p["reached"] for p in first_reach(table, 40.0))


PAPER_D33 = {32: (7.87, 4.59), 64: (7.64, 4.28), 128: (7.29, 4.15), 256: (6.91, 4.19),
             512: (6.44, 4.24), 1024: (6.21, 4.29), 2048: (6.23, 4.55)}


def test_paper_optima_table_gives_the_paper_trend():
    """PAPER.md §6.2: at D = 2^33 the per-B optimal norm falls with B and B* = 128."""
    optima = [Optimum(setup=(), log2_D=33.0, batch_size=float(b), x_star=x, loss_star=loss,
                      log2_eta_star=-8.0, log2_eta_interp=-8.0, ok=True, flag="", fixed=None,
                      free=None, n_runs=7, x_emp=x, loss_emp=loss, log2_eta_emp=-8.0)
              for b, (x, loss) in PAPER_D33.items()]
    slope = norm_vs_batch(optima)[33.0]
    assert slope["slope"] < 0 and slope["slope"] < -2 * slope.stderr("slope")
    (best,) = best_per_horizon(optima)
    assert best.batch_size == 128 and best.x_star == 7.29
    # A parabola in log2 B through the loss* puts the continuous B* between 2^7 and 2^8.5.
    fit = fit_parabola(np.log2(list(PAPER_D33)), [v[1] for v in PAPER_D33.values()])
    assert fit.has_minimum and 7.0 < fit.x_star < 8.5


def test_line_fit_standard_errors_match_numpy():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 10, 40)
    y = 2.0 * x + 1.0 + rng.normal(size=x.size)
    f = line_fit(x, y)
    coef, cov = np.polyfit(x, y, 1, cov="unscaled")
    resid = y - np.polyval(coef, x)
    np.testing.assert_allclose(f.coef, coef)
    np.testing.assert_allclose(f.se, np.sqrt(np.diag(cov) * (resid @ resid) / (x.size - 2)))
    assert 0.9 < f.r2 < 1.0
    with pytest.raises(ValueError, match="rank deficient"):
        line_fit(np.ones(5), y[:5])


def test_lr_scale_ranking_finds_one_eighth(small_sweep):
    t = collect(os.path.join(small_sweep, "scales"), horizons=range(20, 27))  # L* < ln V
    ranking = lr_scale_ranking(t)
    assert ranking[0]["label"] == "1 : 1/8 : 1" == scale_label(TRUTH.best_scales)
    assert ranking[0]["fraction"] == 1.0 and ranking[0]["mean_rank"] == 1.0
    assert ranking[0]["settings"] == len({(r["log2_D"], r["batch_size"]) for r in t})
    assert ranking[-1]["fraction"] == 0.0
    assert sum(r["in_top"] for r in ranking) == ranking[0]["settings"]  # ⌈0.1·6⌉ = 1 per setting


def _variant_table(widths_by_schedule, log2_d=19, batch=16):
    """An LR sweep per schedule with loss = ln V − … a parabola in x = log2 norm of known
    curvature: near-optimal width 2·sqrt(0.01·loss*/a) is known exactly."""
    table = []
    for name, a in widths_by_schedule.items():
        for i, x in enumerate(np.linspace(1.0, 7.0, 9)):
            b = -2 * a * 4.0  # vertex at x* = 4
            loss = a * x**2 + b * x + math.log(256)
            table.append({"run": f"{name}{i}", "log2_D": log2_d, "batch_size": batch,
                          "log2_norm": x, "output_norm": 2**x, "loss": loss,
                          "log2_lr": x - 6, "tokens": 2.0**log2_d, "model.vocab_size": 256,
                          "schedule.name": name, "input_norm": 10 - 8 / (1 + x),
                          "hidden_norm": 9.0, "optimizer.weight_decay": 0.1})
    return table


def test_compare_setups_puts_variants_side_by_side_with_their_widths(tmp_path):
    table = _variant_table({"constant": 0.2, "linear_decay": 0.2 / 16})
    optima = fit_optima(table)
    (row,) = compare_setups(optima, "schedule.name")
    assert (row["log2_D"], row["batch_size"]) == (19, 16)
    const, dec = row["by_value"]["constant"], row["by_value"]["linear_decay"]
    assert const["x_star"] == pytest.approx(4.0) == dec["x_star"]
    loss_star = math.log(256) - 0.2 * 16
    assert const["width"] == pytest.approx(2 * math.sqrt(0.01 * loss_star / 0.2))
    decayed_star = math.log(256) - 0.2 / 16 * 16
    assert dec["width"] == pytest.approx(2 * math.sqrt(0.01 * decayed_star / (0.2 / 16)))
    assert compare_setups(optima, "optimizer.momentum") == []  # nothing differs in it
    png = figures.fig_compare_setups(table, optima, str(tmp_path / "8.png"),
                                     key="schedule.name", log2_D=19, batch_size=16)
    assert _is_png(png)
    assert _is_png(figures.fig_layer_norms(table, str(tmp_path / "9.png"), reference=10.0))


# --- figures and the command line ------------------------------------------------------------

def _is_png(path, min_bytes=5000):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG and os.path.getsize(path) > min_bytes


def test_every_figure_writes_a_png(small_sweep, tmp_path):
    t = collect(os.path.join(small_sweep, "widths"))
    opt = fit_optima(t)
    base = [o for o in opt if o.setting("model.d_model") == 256]
    rows = figures.in_setup(t, base[0].setup)
    fr = first_reach(rows, 7.0)
    ranking = lr_scale_ranking(collect(os.path.join(small_sweep, "scales")))
    paths = [
        figures.fig_loss_vs_norm(t, base, str(tmp_path / "1a.png"), setup=base[0].setup),
        figures.fig_norm_vs_tokens(t, str(tmp_path / "1b.png"), setup=base[0].setup),
        figures.fig_optima_by_horizon(base, str(tmp_path / "2a.png")),
        figures.fig_optima_by_model(opt, str(tmp_path / "2b.png"), key="model.d_model"),
        figures.fig_first_reach(fr, fit_first_reach(fr), str(tmp_path / "3a.png")),
        figures.fig_eta_star(base, fit_global(base), str(tmp_path / "3b.png")),
        figures.fig_lr_ranking(ranking, str(tmp_path / "4.png")),
    ]
    paths.append(figures.fig_loss_vs_norm(t, base, str(tmp_path / "1a_b64.png"), log2_D=26,
                                          setup=base[0].setup, batch_sizes=[64]))
    assert all(_is_png(p) for p in paths)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)
    with pytest.raises(ValueError, match="needs ≥ 2"):
        figures.fig_optima_by_model(base, str(tmp_path / "x.png"), key="model.n_layers")


def test_plot_py_end_to_end(small_sweep, tmp_path):
    sweep = str(tmp_path / "sweep")
    shutil.copytree(small_sweep, sweep)
    torn = os.path.join(sweep, "widths", sorted(os.listdir(os.path.join(sweep, "widths")))[0],
                        "metrics.jsonl")
    text = open(torn).read()
    open(torn, "w").write(text[:-7])
    out = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "plot.py"),
                           f"--sweep_dir={sweep}/widths,{sweep}/scales", f"--out_dir={out}",
                           "--k=7", "--window_log2=0"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped (model.n_layers takes 1 value(s)" in proc.stdout  # no depth variation
    assert os.path.getsize(os.path.join(out, "table.csv")) > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepWarning)
        expected = {r["run"] for r in collect(sweep)}  # named <sweep>/<run> there too
    assert {r["run"] for r in read_csv(os.path.join(out, "table.csv"))} == expected
    record = json.loads(open(os.path.join(out, "fits.json")).read(),
                        parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert len(record["skipped_runs"]) == 1 and "truncated" in record["skipped_runs"][0]
    main = record["setups"][0]
    assert main["global"]["alpha"] == pytest.approx(TRUTH.alpha, abs=0.15)
    assert main["norm_band"]["mean"] == pytest.approx(TRUTH.x00, abs=0.3)
    assert record["lr_ranking"][0]["label"] == "1 : 1/8 : 1"
    pngs = sorted(f for f in os.listdir(out) if f.endswith(".png"))
    assert pngs == sorted(record["figures"]) and len(pngs) == 7
    assert "fig2b_optima_by_width.png" in pngs and all(_is_png(os.path.join(out, p))
                                                       for p in pngs)
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temp files left


def test_an_earlier_table_stands_in_for_runs_whose_metrics_are_gone(small_sweep, tmp_path):
    """A sweep whose raw runs are partly lost: the earlier analysis's table.csv supplies the
    lost runs' rows, exactly as collecting the whole sweep gives them; the runs still on
    disk come from disk whatever their directory is called now (matched by config, not
    name); a different window, a run short of its steps or a directory without runs is
    refused or reported."""
    sweep = tmp_path / "scales"
    shutil.copytree(os.path.join(small_sweep, "scales"), sweep)
    whole = collect(str(sweep), window_log2=0.25)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    write_csv(whole, str(earlier / "table.csv"))
    (earlier / "fits.json").write_text(json.dumps({"window_log2": 0.25,
                                                   "sweep_dirs": ["old/place/scales"]}))
    runs = sorted(os.listdir(sweep))
    for lost in runs[::2]:
        shutil.rmtree(sweep / lost)
    kept = sweep / runs[1] / "metrics.jsonl"  # on disk and in the table: disk wins
    lines = kept.read_text().splitlines(keepends=True)
    kept.write_text("".join(lines[: len(lines) // 2]))
    renamed = tmp_path / "renamed"
    sweep.rename(renamed)
    (tmp_path / "empty").mkdir()

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "plot.py"),
                           f"--sweep_dir={earlier / 'table.csv'},{renamed},{tmp_path / 'empty'}",
                           f"--out_dir={out}", "--window_log2=0.25", "--allow_partial"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"no usable runs under '{tmp_path / 'empty'}'" in proc.stdout + proc.stderr
    assert f"run 'scales/{runs[1]}' is also in another source, which has fewer" in \
        proc.stdout + proc.stderr
    merged = read_csv(str(out / "table.csv"))
    key = lambda r: (r["run"].split("/", 1)[1], r["log2_D"])
    partial = collect(str(renamed), window_log2=0.25, allow_partial=True)
    expected = sorted([r for r in whole if r["run"] not in runs[1::2]] + partial,
                      key=lambda r: (r["run"], r["log2_D"]))
    assert to_csv_text([{**r, "run": "/"} for r in sorted(merged, key=key)]) == \
        to_csv_text([{**r, "run": "/"} for r in expected])
    named = {r["run"] for r in merged}
    assert named == {f"scales/{r}" for r in runs[::2]} | {f"renamed/{r}" for r in runs[1::2]}

    # The table of an analysis of a table alone has its names already prefixed.
    (earlier / "fits.json").write_text(json.dumps({"window_log2": 0.25,
                                                   "sweep_dirs": ["a/table.csv"]}))
    assert {r["run"] for r in read_table(str(earlier / "table.csv"), window_log2=0.25)} == set(
        runs)
    with pytest.raises(ValueError, match="collected with window_log2=0.25.*not the 0.0"):
        read_table(str(earlier / "table.csv"), window_log2=0.0)
    short = [r for r in whole if not (r["run"] == runs[0] and r["log2_D"] == max(
        x["log2_D"] for x in whole if x["run"] == runs[0]))]
    write_csv(short, str(earlier / "table.csv"))
    with pytest.warns(SweepWarning, match=re.escape(f"skipping run '{runs[0]}'")):
        rows = read_table(str(earlier / "table.csv"), window_log2=0.25)
    assert {r["run"] for r in rows} == set(runs) - {runs[0]}
    assert {r["run"] for r in read_table(str(earlier / "table.csv"), window_log2=0.25,
                                         allow_partial=True)} == set(runs)
    (earlier / "fits.json").unlink()
    with pytest.raises(FileNotFoundError, match="needs the table.csv and the fits.json"):
        read_table(str(earlier / "table.csv"), window_log2=0.25)


def test_iso_norm_prediction_recovers_known_eta_star(table, optima):
    """predict_lr's method on a sweep with known laws: η* at an unseen (B, D) and
    leave-one-out errors well under one grid step (2^0.25)."""
    from scion_jax.analysis.predict import (
        leave_one_out,
        norm_laws,
        predict_held_out,
        predict_log2_eta,
    )

    x_fit, n_fit = norm_laws(table, optima)
    assert n_fit["u"] == pytest.approx(1.0, abs=0.05)  # log2 N = log2 η + v·log2 B + w·log2 D
    assert n_fit["v"] == pytest.approx(TRUTH.v, abs=0.05)
    log2_b, log2_d = 11.0, 30.0  # B = 2048: outside the swept batch sizes
    truth = TRUTH.alpha * log2_b + TRUTH.beta * log2_d + TRUTH.gamma
    assert predict_log2_eta(x_fit, n_fit, log2_b, log2_d) == pytest.approx(truth, abs=0.2)
    rows = leave_one_out(table, optima)
    assert len(rows) == sum(o.ok for o in optima)
    err = np.array([r["log2_eta_iso_norm"] - r["log2_eta_measured"] for r in rows])
    assert np.sqrt(np.mean(err**2)) < 0.15
    top = max(o.log2_B for o in optima)  # every horizon of the largest B, from the others
    held = predict_held_out(table, optima, lambda log2_b, _: log2_b == top)
    assert {r["log2_D"] for r in held} == {o.log2_D for o in optima if o.ok and o.log2_B == top}
    for r in held:
        truth = TRUTH.alpha * top + TRUTH.beta * r["log2_D"] + TRUTH.gamma
        assert r["log2_eta_iso_norm"] == pytest.approx(truth, abs=0.25)


def test_predict_lr_cli_checks_held_out_batches_and_another_sweep(sweep, tmp_path):
    """--check_dir predicts only the other sweep's new (B, D): here its batch size 2048."""
    other = str(tmp_path / "b2048")
    make_sweep(other, batch_sizes=(2048,), noise=1e-4, seed=2)
    out = tmp_path / "predict.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "predict_lr.py"), f"--sweep_dir={sweep}",
         "--leave_one_out", "--hold_out_batch=1024", f"--check_dir={other}", f"--out={out}"],
        capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert sorted(record) == ["check_b2048", "hold_out_B1024", "leave_one_out"]
    assert {r["log2_B"] for r in record["hold_out_B1024"]["rows"]} == {10.0}
    assert {r["log2_B"] for r in record["check_b2048"]["rows"]} == {11.0}
    assert math.isfinite(record["check_b2048"]["rms_log2_error"]["log2_eta_iso_norm"])

"""Norm transfer across horizons (scion_jax.analysis.transfer): the continuous B*(D), the
optimal norm at it with bootstrap intervals, edge marks and the decision rule's verdict
(REPORT.md, "Decision rule for the plateau study"), on synthetic sweeps with known truth."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from scion_jax.analysis import collect, transfer
from scion_jax.analysis.synthetic import Truth, make_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LRS = tuple(np.arange(-12.0, 0.01, 0.5))
HORIZONS = range(25, 31)
# B*(D) = 2^(k/2 − 7.25): 38 … 215 over the horizons, nearest the grid's smallest B (32) at
# 2^25 and its largest (256) at 2^30, between grid points (never halfway) in between
B0 = 7.25


def _sweep(path, truth=Truth(b0=B0), noise=0.0):  # noqa: B008 (frozen)
    make_sweep(str(path), truth, log2_lrs=LRS, batch_sizes=(32, 64, 128, 256),
               max_log2_tokens=30, noise=noise, seed=3)
    return str(path)


def _table(sweep_dir):
    return [dict(r, seed=0) for r in collect(sweep_dir, horizons=HORIZONS)]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    return _sweep(tmp_path_factory.mktemp("flat"))


@pytest.fixture(scope="module")
def table(sweep_dir):
    return _table(sweep_dir)


def test_horizon_study_cli_reads_a_flat_optimal_norm_as_a_plateau(sweep_dir, tmp_path):
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "horizon_study.py"),
         f"--sweep_dir={sweep_dir}", f"--out_dir={out}", "--min_log2_D=25",
         "--fit_max_log2_D=28", "--loss=eval_loss", "--window_log2=0.25", "--n_draws=100",
         "--readouts=loss@0"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((out / "transfer.json").read_text())
    assert record["verdict"] == "plateau" and record["decided_by"] is None
    primary = record["primary"]
    assert primary["fixed_c"]["slope"]["horizons"] == [27, 28, 29]  # 2^30: B* at the B edge
    assert abs(primary["fixed_c"]["slope"]["per_doubling"]) < 0.02
    # beside it: the same with edges included, and the unwindowed training loss
    assert [(r["loss"], r["window_log2"], r["include_edges"]) for r in record["readouts"]] == [
        ("eval_loss", 0.25, True), ("loss", 0.0, False)]
    assert all(r["verdict"] == "plateau" for r in record["readouts"])
    rms = record["scaling"]["predict_check"]["rms_log2_error"]  # the synthetic laws are exact
    assert rms["log2_eta_iso_norm"] < 0.05 and rms["log2_eta_power_law"] < 0.05
    assert record["scaling"]["horizons"] == [26, 27, 28, 29]
    assert record["scaling"]["b_star"]["exponent"] == pytest.approx(Truth().e, abs=0.03)
    assert (out / "fig2a_norm_transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "\nverdict: plateau" in run.stdout


def test_continuous_b_star_and_the_optimal_norm_at_it_are_the_truth(table, tmp_path):
    curve = transfer.horizon_curve(transfer.primary_optima(table))
    truth = Truth(b0=B0)
    assert [r["log2_D"] for r in curve] == list(HORIZONS)
    assert "smallest B" in curve[0]["b_edge"]
    for r in curve[1:-1]:
        assert r["log2_b_star"] == pytest.approx(truth.log2_b_star(r["log2_D"]), abs=0.05), r
        assert r["x_star"] == pytest.approx(truth.x00, abs=0.05), r
        assert r["used"] and not r["b_edge"]
    # 2^30: B* = 256, the grid's largest B: marked, left out, its vertex kept for the table
    assert "largest B" in curve[-1]["b_edge"] and not curve[-1]["used"]
    assert transfer.longest_used(curve)[-1]["log2_D"] == 29
    assert transfer.horizon_curve(transfer.primary_optima(table), include_edges=True)[-1]["used"]


def _verdict(path, truth, noise):
    t = _table(_sweep(path, truth, noise))
    return transfer.read_out(t, n_draws=300)


def test_a_slope_of_0_3_per_doubling_is_rising(tmp_path):
    read = _verdict(tmp_path, Truth(r=0.3, b0=B0), 0.0)
    assert read["verdict"] == "rising" and "decided_by" not in read
    for fit in ("fixed_c", "free_c"):
        assert read[fit]["slope"]["per_doubling"] == pytest.approx(0.3, abs=0.03)


def test_a_slope_of_0_15_with_realistic_noise_is_undecided(tmp_path):
    """Held-out noise like cpu_horizon's (0.01 nats per evaluation): the slope is
    measured, its interval holds the truth, and the rule does not decide."""
    read = _verdict(tmp_path, Truth(r=0.15, b0=B0), 0.01)
    assert read["verdict"] == "undecided" and "decided_by" in read
    s = read["fixed_c"]["slope"]
    assert s["lo"] < 0.15 < s["hi"] and s["hi"] - s["lo"] > 0.01
    assert s["n_finite"] >= 0.9 * s["n_draws"]


def test_the_decision_rule_and_the_horizon_that_would_decide_it():
    assert transfer.decide(0.05, -0.05, 0.15) == "plateau"
    assert transfer.decide(0.05, -0.1, 0.25) == "undecided"  # cannot exclude 0.2
    assert transfer.decide(0.3, 0.15, 0.45) == "rising"
    assert transfer.decide(0.3, 0.05, 0.55) == "undecided"  # cannot exclude 0.1
    assert transfer.decide(0.15, 0.14, 0.16) == "undecided"  # between the thresholds
    # slowing by 0.1 per doubling: 0.15 over 2^22…2^24 (0.25 one horizon earlier)
    curve = [{"log2_D": 20 + i, "x_star": x, "used": True}
             for i, x in enumerate([5.0, 5.4, 5.7, 5.9, 6.0])]
    s = transfer.slope(curve[-3:])
    assert s == pytest.approx(0.15)
    p = transfer.projection(curve, s, s - 0.05, s + 0.05)
    assert (p["log2_D"], p["verdict"]) == (25, "plateau")
    assert p["projected_slope"] == pytest.approx(0.05)
    assert p["change_per_doubling"] == pytest.approx(-0.1)
    assert transfer.projection(curve, s, s - 0.5, s + 0.5)["log2_D"] is None  # too noisy


def test_eta_edge_optima_are_marked_and_left_out_of_b_star(tmp_path):
    """B 64's grid stops below its η* (lowest loss at the largest η), B 128's starts above
    it (at the smallest): both are marked and left out, unless asked."""
    truth = Truth(b0=B0)
    eta = {b: lambda d, b=b: truth.log2_eta_star(math.log2(b), d) for b in (64, 128)}
    rows = [r for r in _table(_sweep(tmp_path, truth))
            if not (r["batch_size"] == 64 and r["log2_lr"] > eta[64](r["log2_D"]) - 1.0)
            and not (r["batch_size"] == 128 and r["log2_lr"] < eta[128](r["log2_D"]) + 1.0)]
    optima = transfer.primary_optima(rows)
    assert {o.eta_edge for o in optima if o.batch_size == 64} == {"high"}
    assert {o.eta_edge for o in optima if o.batch_size == 128} == {"low"}
    assert {o.eta_edge for o in optima if o.batch_size in (32, 256)} == {""}
    for r in transfer.horizon_curve(optima):
        assert r["batch_sizes"] == [32, 256]
        assert [p["eta_edge"] for p in r["per_b"]] == ["", "high", "low", ""]
        assert not r["used"] and r["b_edge"]  # 2 B left, or B* at the grid's edge
    kept = transfer.horizon_curve(optima, include_edges=True)
    assert all(r["batch_sizes"] == [32, 64, 128, 256] for r in kept)


def test_ks_that_fit_the_same_points_are_reported_once(table):
    assert [k["k"] for k in transfer.distinct_ks(table, (5, 7, 9))] == [5, 7, 9]
    seven = [r for r in table if -9.0 <= r["log2_lr"] <= -6.0]  # 7 runs per sweep
    assert [k["k"] for k in transfer.distinct_ks(seven, (5, 7, 9))] == [5, 7]


def test_each_seed_is_fitted_on_its_own_runs_only(table):
    """Seed 1 repeats the 3 runs nearest each optimum: its fits use those 3, never seed 0's."""
    seed1 = []
    for o in transfer.primary_optima(table):
        group = [r for r in table if (r["log2_D"], r["batch_size"]) == (o.log2_D, o.batch_size)]
        group.sort(key=lambda r: abs(r["log2_norm"] - o.x_star))
        seed1 += [dict(r, seed=1) for r in group[:3]]
    tables = transfer.seed_tables(table + seed1)
    assert sorted(tables) == [0, 1] and tables[1] == seed1 and tables[0] == table
    assert {o.fit.n for o in transfer.primary_optima(tables[1])} == {3}


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


def test_the_printed_table_marks_a_b_edge_of_the_free_c_fit_alone():
    """A horizon whose free-c optima put B* at a B edge while the fixed-c ones do not (as
    cpu_plateau's 2^23) says so in the B edge column, so its free-c x is not read as used."""
    def horizon(b_edge):
        return {"log2_D": 23.0, "b_star": 32.0, "log2_b_star": 4.6, "log2_b_star_se": 0.1,
                "x_star": 6.8, "x_lo": 6.7, "x_hi": 6.9, "x_discrete": 6.8, "loss_star": 1.5,
                "log2_eta_star": -2.0, "b_edge": b_edge, "used": not b_edge, "per_b": []}
    def fit(b_edge):
        return {"horizons": [horizon(b_edge)], "verdict": "undecided",
                "slope": {"per_doubling": None, "lo": None, "hi": None, "horizons": []}}
    reading = {"loss": "eval_loss", "window_log2": 0.25, "seed": 0, "include_edges": False,
               "verdict": "undecided", "fixed_c": fit(""),
               "free_c": fit("lowest loss at the smallest B left"), "ks": []}
    code = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'experiments')!r}); "
            f"import horizon_study as h; h._print_reading({reading!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (row,) = [line for line in out.stdout.splitlines() if line.startswith("| 23 |")]
    assert row.endswith("| – | –; free c: lowest loss at the smallest B left |"), row


def test_point_fits_and_the_width_check_use_the_base_seed_only(tmp_path):
    """A second seed repeating some runs is read out on its own, never changing the base
    seed's fits: B*(D), η*(D), the global fit, fits.json and the width check are those of
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
             f"--out_dir={out}", "--min_log2_D=24", "--fit_max_log2_D=27", "--n_draws=50"],
            capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        records[name] = (json.loads((out / "transfer.json").read_text()),
                         json.loads((out / "fits.json").read_text()), run.stdout)
    (alone, fits_alone, _), (both, fits_both, stdout) = records["alone"], records["both"]
    for key in ("primary", "scaling", "width_check", "verdict"):
        assert both[key] == alone[key], key
    assert fits_both["setups"] == fits_alone["setups"]
    assert fits_both["seeds"] == {"fitted": 0, "other": [1]}
    assert fits_both["n_runs"] == fits_alone["n_runs"] + 50  # seed 1's runs are in table.csv
    (seed1,) = [r for r in both["readouts"] if r["seed"] == 1]
    assert all(p["batch_size"] == 64 for r in seed1["fixed_c"]["horizons"] for p in r["per_b"])
    # read pairwise too: the tilt is the loss difference at every shared point, the norms
    # are equal, and it moves the best η down where it changes the ranking
    pairs, best = both["seed_pairs"]["1"]["pairs"], both["seed_pairs"]["1"]["best"]
    assert len(pairs) == 6 * len(LRS) and {p["batch_size"] for p in pairs} == {64}
    for p in pairs:
        assert p["d_loss"] == pytest.approx(0.05 * p["log2_lr"], abs=1e-9), p
        assert p["d_log2_norm"] == 0.0, p
    assert len(best) == 6 and all(b["log2_lr_other"] <= b["log2_lr_base"] for b in best)
    assert any(not b["same_best"] for b in best)
    assert "seed 1 against the base seed at 150 points" in stdout
    checked = both["width_check"]
    assert {(w["log2_D"], w["batch_size"]) for w in checked} == {
        (d, b) for d in range(24, 30) for b in (32, 64, 128)}
    for w in checked:
        truth = Truth().x_star(math.log2(w["batch_size"]), w["log2_D"])
        assert abs(w["256"] - truth) < 0.2 and abs(w["512"] - truth) < 0.2, w
    assert "width check at D = 2^29, B 64: optimal log2 norm " in stdout


def test_committed_transfer_json_and_report_state_the_same_verdict():
    """Every study's transfer.json written by the decision rule and REPORT.md's verdict line
    for it, "**Verdict (`<study>/transfer.json`): <verdict>**, slope <s> [<lo>, <hi>]", agree."""
    results = os.path.join(ROOT, "experiments", "results")
    with open(os.path.join(results, "REPORT.md")) as f:
        stated = {m[0]: m[1:] for m in re.findall(
            r"\*\*Verdict \(`([\w/]+)/transfer\.json`\): (\w+)\*\*, slope ([-+]\d\.\d\d) "
            r"\[([-+]\d\.\d\d), ([-+]\d\.\d\d)\]", f.read())}
    studies = []
    for study in sorted(os.listdir(results)):
        path = os.path.join(results, study, "transfer.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            record = json.load(f)
        if "rule" not in record:
            continue
        studies.append(study)
        s = record["primary"]["fixed_c"]["slope"]
        assert stated.get(study) == (record["verdict"], *(f"{s[k]:+.2f}" for k in (
            "per_doubling", "lo", "hi"))), study
    assert "cpu_horizon" in studies and sorted(stated) == studies


def test_the_fits_combine_into_one_verdict_and_one_deciding_horizon():
    """Agreeing fits give their verdict; otherwise undecided, and a deciding horizon only
    where every undecided fit's projection reaches the verdict the other has or reaches."""
    def fit(verdict, at=None, projected=None):
        return {"verdict": verdict, "decided_by": {"log2_D": at, "verdict": projected}}

    assert transfer.combine(fit("rising"), fit("rising")) == ("rising", None)
    assert transfer.combine(fit("rising"), fit("plateau")) == ("undecided", None)
    assert transfer.combine(fit("rising"), fit("undecided", 26, "rising"))[1]["log2_D"] == 26
    assert transfer.combine(fit("rising"), fit("undecided", 26, "plateau")) == ("undecided", None)
    both = transfer.combine(fit("undecided", 27, "plateau"), fit("undecided", 26, "plateau"))
    assert both[1]["log2_D"] == 27  # both decided only by the later horizon
    assert transfer.combine(fit("undecided", 27, "plateau"),
                            fit("undecided", 26, "rising")) == ("undecided", None)
    assert transfer.combine(fit("undecided"), fit("undecided", 26, "rising")) == (
        "undecided", None)


def test_b_star_at_the_smallest_b_left_is_a_b_edge(table):
    """With B 32 left out (an η-edge optimum), a lowest loss* at B 64 is at the edge of
    the B left: not bracketed, so marked and not used."""
    at = [o for o in transfer.primary_optima(table) if o.log2_D == 27]
    assert transfer.b_star(at)["b_edge"] == ""
    best = min(o.loss_star for o in at)
    edged = [dataclasses.replace(o, eta_edge="low", loss_star=best - 0.2) if o.batch_size == 32
             else dataclasses.replace(o, loss_star=best - 0.1) if o.batch_size == 64 else o
             for o in at]
    row = transfer.b_star(edged)
    assert row["batch_sizes"] == [64, 128, 256] and row["b_star"] == 64
    assert row["b_edge"] == "lowest loss at the smallest B left"


def test_the_bootstrap_pools_only_the_fits_it_counts(tmp_path):
    """η-edge optima, left out of B*(D), leave the residual pools alone too: noisy
    residuals of a left-out B do not change a single replicate."""
    t = _table(_sweep(tmp_path, noise=0.01))
    optima = transfer.primary_optima(t)
    rng = np.random.default_rng(0)
    noisy = [dataclasses.replace(o, eta_edge="high", fixed=dataclasses.replace(
        o.fixed, y=tuple(np.array(o.fixed.y) + rng.normal(0, 1.0, len(o.fixed.y)))))
        for o in optima if o.batch_size == 128]
    kept = [o for o in optima if o.batch_size != 128]
    horizons = [27, 28, 29]
    alone = transfer.bootstrap(kept, horizons, n_draws=50)
    beside = transfer.bootstrap(kept + noisy, horizons, n_draws=50)
    np.testing.assert_array_equal(alone["slope"], beside["slope"])
    assert np.isfinite(alone["slope"]).mean() > 0.9


def test_lost_replicates_widen_the_interval_and_no_residuals_give_none(table):
    values = np.linspace(0.0, 1.0, 1000)
    lo, hi, n = transfer._summary(values)
    assert (lo, hi, n) == (pytest.approx(0.025), pytest.approx(0.975), 1000)
    some = np.concatenate([values, np.full(10, np.nan)])  # 1% lost: wider, still finite
    lo1, hi1, n1 = transfer._summary(some)
    assert lo1 < lo and hi1 > hi and np.isfinite([lo1, hi1]).all() and n1 == 1000
    many = np.concatenate([values, np.full(40, np.nan)])  # 3.8% lost: unbounded
    assert transfer._summary(many)[:2] == (-np.inf, np.inf)
    # three runs per sweep: the free-c parabolas (3 coefficients) have no residuals
    three = [r for r in table if abs(r["log2_lr"] + 7.5) <= 0.5]
    read = transfer.read_fit(three, free_c=True, n_draws=20)
    assert all(math.isnan(r["x_lo"]) for r in read["horizons"])
    assert read["verdict"] == "undecided"


def test_the_fixed_c_fit_needs_the_vocabulary_size(table):
    bare = [{k: v for k, v in r.items() if k != "model.vocab_size"} for r in table]
    with pytest.raises(ValueError, match="vocabulary size"):
        transfer.primary_optima(bare)
    vocab = table[0]["model.vocab_size"]
    assert [o.x_star for o in transfer.primary_optima(bare, vocab_size=vocab)] == [
        o.x_star for o in transfer.primary_optima(table)]
    assert all(not o.fit.fixed_c for o in transfer.primary_optima(bare, free_c=True))


def test_the_vertex_standard_error_is_the_vertex_spread_under_noise():
    u = np.array([5.0, 6.0, 7.0, 8.0, 9.0])
    truth = 1.5 + 0.02 * (u - 6.8) ** 2
    rng = np.random.default_rng(0)
    vertices, ses = [], []
    for _ in range(2000):
        v, se, _ = transfer._vertex(u, truth + rng.normal(0, 0.002, len(u)))
        vertices.append(v)
        ses.append(se)
    assert np.mean(vertices) == pytest.approx(6.8, abs=0.02)
    assert np.median(ses) == pytest.approx(np.std(vertices), rel=0.2)

"""experiments/sweep.py: one run per point, failures recorded, finished runs skipped."""

import functools
import glob
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from scion_jax.analysis.collect import collect
from scion_jax.train.config import validate
from scion_jax.train.metrics import read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_CONFIG = """
import ml_collections
from scion_jax.train.config import base_config

def get_config():
    base = base_config()
    base.seq_len, base.eval_batches = 32, 1
    base.model.update(d_model=64, n_layers=1, n_heads=1, head_dim=32)
    base.data.source = {corpus!r}
    base.log_every = base.norm_every = base.eval_every = 4
    s = ml_collections.ConfigDict()
    s.base = base
    s.grid = (("batch_size", (4, 8)), ("schedule.name", ("constant", "bogus")))
    s.max_tokens = 256
    return s
"""


def _sweep(config_path, sweep_dir, *extra):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "experiments", "sweep.py"),
        f"--config={config_path}",
        f"--sweep_dir={sweep_dir}",
        "--workers=2",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400)


def _corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"doc{i}.txt").write_text("to be or not to be that is the question " * 40)
    return corpus


def test_sweep_runs_records_failures_and_resumes(tmp_path):
    corpus = _corpus(tmp_path)
    config_path = tmp_path / "sweep_config.py"
    config_path.write_text(SWEEP_CONFIG.format(corpus=str(corpus / "*.txt")))
    sweep_dir = tmp_path / "sweep"

    record = tmp_path / "record"
    first = _sweep(config_path, sweep_dir, "--cpus_per_run=1",  # each worker on its own core
                   f"--record_dir={record}")
    assert first.returncode == 1, first.stderr[-2000:]  # the two "bogus" points fail
    index = json.loads((sweep_dir / "index.json").read_text())
    assert {n: p["status"] for n, p in index.items()} == {
        "bs=4_sched=constant": "done",
        "bs=4_sched=bogus": "failed",
        "bs=8_sched=constant": "done",
        "bs=8_sched=bogus": "failed",
    }
    assert index["bs=4_sched=constant"]["steps"] == 2 and index["bs=8_sched=constant"]["steps"] == 1
    assert (
        "config.schedule.name='bogus' is invalid"
        in (sweep_dir / "runs" / "bs=4_sched=bogus" / "log.txt").read_text()
    )

    metrics = sweep_dir / "runs" / "bs=4_sched=constant" / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    second = _sweep(config_path, sweep_dir, "--mode=slurm")
    assert "4 points, 2 finished, 2 to run." in second.stdout
    assert metrics.stat().st_mtime_ns == before  # finished runs are not touched
    commands = (sweep_dir / "commands.txt").read_text().splitlines()  # the unfinished two
    assert len(commands) == 2 and all("from_json.py:" in c and "bogus" in c for c in commands)
    assert "#SBATCH --array=0-1" in (sweep_dir / "slurm.sh").read_text()

    changed = tmp_path / "changed_config.py"
    changed.write_text(SWEEP_CONFIG.format(corpus=str(corpus / "*.txt")).replace(
        "base.seq_len, base.eval_batches = 32, 1", "base.seq_len, base.eval_batches = 32, 2"))
    third = _sweep(changed, sweep_dir, "--mode=commands")
    assert third.returncode != 0
    assert "was made with a different config (eval_batches: 1 there, 2 here)" in third.stderr
    changed.write_text(SWEEP_CONFIG.format(corpus=str(corpus / "*.txt")).replace(
        "base.seq_len, base.eval_batches = 32, 1",
        "base.seq_len, base.eval_batches, base.eval_sequences = 32, 1, 8"))
    fourth = _sweep(changed, sweep_dir, "--mode=commands")  # a key the stored config lacks
    assert "(eval_sequences: 0 there, 8 here)" in fourth.stderr

    # --record_dir kept the finished runs' config and metrics (no checkpoints); a sweep on a
    # fresh directory restores them instead of training again. --only runs a subset.
    assert sorted(os.listdir(record / "runs")) == ["bs=4_sched=constant", "bs=8_sched=constant"]
    kept = record / "runs" / "bs=4_sched=constant"
    assert sorted(os.listdir(kept)) == ["config.json", "metrics.jsonl"]
    assert (kept / "metrics.jsonl").read_bytes() == metrics.read_bytes()
    fresh = tmp_path / "fresh"
    fifth = _sweep(config_path, fresh, f"--record_dir={record}", "--mode=commands",
                   "--only=bs=4_sched=constant,bs=4_sched=bogus")
    assert "4 points (--only: 2 of them), 2 finished, 1 to run." in fifth.stdout
    restored = fresh / "runs" / "bs=4_sched=constant" / "metrics.jsonl"
    assert restored.read_bytes() == metrics.read_bytes()
    commands = (fresh / "commands.txt").read_text().splitlines()  # not retrained
    assert len(commands) == 1 and commands[0].endswith("runs/bs=4_sched=bogus")
    assert json.loads((fresh / "index.json").read_text()).keys() == index.keys()


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _sweep_module():
    return _load("sweep_under_test", os.path.join(ROOT, "experiments", "sweep.py"))


def _plateau_record(tmp_path, best_log2_b=5.3, b16_offset=None, moved_lr=None):
    """A finished seed-0 record of cpu_plateau's essential grid (and B 16's, its loss* moved
    by `b16_offset`, unless None) at 2^25 tokens, synthetic: log2 norm
    x = 5 + log2 η + 0.3·log2 B and a held-out loss quadratic in x around each B's optimum
    (log2 η* from `moved_lr` where it names B; through ln V at x = 0, as the fixed-c fit has
    it), whose loss* is quadratic in log2 B around `best_log2_b`."""
    best_log2_lr = {16: -2.3, 32: -2.7, 64: -1.8, 128: -1.4, **(moved_lr or {})}
    grid = _load("cpu_plateau", os.path.join(ROOT, "experiments", "configs", "sweeps",
                                             "cpu_plateau.py")).GRID
    record = tmp_path / "record"
    for b in list(grid)[:-1 if b16_offset is None else None]:
        for log2_lr in grid[b]:
            run = record / "runs" / f"bs={b}_lr={2**log2_lr:g}"
            run.mkdir(parents=True)
            steps = 2**25 // (b * 128)
            run.joinpath("config.json").write_text(json.dumps(
                {"batch_size": b, "seq_len": 128, "steps": steps, "seed": 0,
                 "model": {"vocab_size": 256}, "optimizer": {"learning_rate": 2.0**log2_lr}}))
            x, x_best = (5 + lr + 0.3 * math.log2(b) for lr in (log2_lr, best_log2_lr[b]))
            best = 1.4 + 0.05 * (math.log2(b) - best_log2_b) ** 2 + (b16_offset if b == 16 else 0)
            loss = best + (math.log(256) - best) / x_best**2 * (x - x_best) ** 2
            run.joinpath("metrics.jsonl").write_text(json.dumps(
                {"step": steps, "tokens": 2**25, "loss": loss, "eval_spread_loss": loss,
                 "output_norm": 2.0**x}) + "\n")
    return record


def test_plateau_seeds_are_placed_by_the_rule(tmp_path):
    """cpu_plateau_seeds: the best two η of the two B nearest the continuous B*(2^25) of the
    finished essential grid; an unfinished grid is refused, naming the missing runs."""
    seeds = _load("cpu_plateau_seeds", os.path.join(ROOT, "experiments", "configs", "sweeps",
                                                    "cpu_plateau_seeds.py"))
    grid = seeds._plateau().GRID
    # B* = 2^5.3: B 32 (0.3 away) and 64 (0.7); B 32's optimum 2^-2.7, B 64's 2^-1.8.
    assert seeds.place(str(_plateau_record(tmp_path / "a")), grid) == (
        (32, -2.5), (32, -3.0), (64, -2.0), (64, -1.5))
    # B* = 2^6.6 lies nearer 128 than 32: B 64 and 128; B 128's optimum 2^-1.4.
    assert [p[0] for p in seeds.place(str(_plateau_record(tmp_path / "b", 6.6)), grid)] == [
        64, 64, 128, 128]
    # B* below the essential grid: B 16 (runs after the seeds) gets its grid's middle η.
    assert seeds.place(str(_plateau_record(tmp_path / "c", 4.0)), grid)[:2] == (
        (16, -2.5), (16, -3.0))
    record = _plateau_record(tmp_path / "d")
    (record / "runs" / "bs=64_lr=0.5" / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match=r"missing \(B, log2 η\): \[\(64, -1\.0\)\]"):
        seeds.place(str(record), grid)
    # B 16 finished counts towards B*: 2^4.2 is bracketed, B 16's best two η are measured.
    assert seeds.place(str(_plateau_record(tmp_path / "e", 4.2, b16_offset=0)), grid) == (
        (16, -2.5), (16, -2.0), (32, -2.5), (32, -3.0))


def test_plateau_edge_extensions_name_the_next_eta_beyond_an_edge(tmp_path):
    """cpu_plateau.edge_extensions: half a step beyond the grid's edge for each finished B
    whose lowest loss at a deciding horizon is at that edge; B with unfinished runs wait."""
    plateau = _load("cpu_plateau", os.path.join(ROOT, "experiments", "configs", "sweeps",
                                                "cpu_plateau.py"))
    grid = plateau.GRID
    assert plateau.edge_extensions(str(_plateau_record(tmp_path / "a", b16_offset=0)), grid) == ()
    # B 32's optimum below its grid (2^-3 … 2^-1.5), B 128's above (2^-2.5 … 2^-1).
    record = _plateau_record(tmp_path / "b", moved_lr={32: -3.6, 128: -0.7})
    assert plateau.edge_extensions(str(record), grid) == ((32, -3.5), (128, -0.5))
    (record / "runs" / "bs=128_lr=0.5" / "metrics.jsonl").unlink()
    assert plateau.edge_extensions(str(record), grid) == ((32, -3.5),)


def test_plateau_width_check_is_placed_by_the_rule(tmp_path):
    """cpu_plateau_width: d 128 at the grid B nearest B*(2^25), η at d 64's best there, half a
    step below, half and one step above."""
    directory = os.path.join(ROOT, "experiments", "configs", "sweeps")
    width = _load("cpu_plateau_width", os.path.join(directory, "cpu_plateau_width.py"))
    grid = _load("cpu_plateau", os.path.join(directory, "cpu_plateau.py")).GRID
    assert width.place(str(_plateau_record(tmp_path / "a")), grid) == (
        (32, -2.5), (32, -2.0), (32, -3.0), (32, -1.5))
    # B 16 below the essentials' parabola: B* 2^4.23 with its runs in (2^4.7 without them).
    assert width.place(str(_plateau_record(tmp_path / "c", 4.7, b16_offset=-0.05)), grid) == (
        (16, -2.5), (16, -2.0), (16, -3.0), (16, -1.5))
    config = width.get_config(str(_plateau_record(tmp_path / "b", 6.6)))
    assert (config.base.model.d_model, config.base.model.n_heads) == (128, 2)
    (keys, points), = config.grid
    assert [p[:2] for p in points] == [(128, 2**-1.5), (128, 2**-1.0), (128, 2**-2.0),
                                       (128, 2**-0.5)]


def test_shipped_sweep_configs_give_valid_runs(tmp_path):
    """Every grid point of every sweep in experiments/configs/sweeps is a valid run config
    (a sweep placed from another sweep's results, from a synthetic finished record)."""
    sweep = _sweep_module()
    directory = os.path.join(ROOT, "experiments", "configs", "sweeps")
    names = sorted(f for f in os.listdir(directory) if f.endswith(".py"))
    assert "cpu_lr_batch.py" in names and "cpu_depth.py" in names
    record = (str(_plateau_record(tmp_path)),)
    placed = {"cpu_plateau_seeds.py": record, "cpu_plateau_width.py": record}
    for name in names:
        module = _load(name[:-3], os.path.join(directory, name))
        points = sweep.points(module.get_config(*placed.get(name, ())))
        assert len({n for n, _, _ in points}) == len(points) > 1, name
        for _, config, _ in points:
            run = ml_collections.ConfigDict(config)
            mesh = {"data": 1, "fsdp": 1, "tensor": 1}
            run.mesh.update(mesh)
            assert validate(run, n_devices=1) == mesh


def test_recorded_study_runs_match_their_sweep_configs():
    """The committed runs (experiments/results/*/sweeps/<sweep>/runs) were made with what
    their sweep config gives today, so rerunning a sweep resumes them instead of refusing a
    changed default (e.g. a new model.attention_block)."""
    sweep = _sweep_module()
    configs = os.path.join(ROOT, "experiments", "configs", "sweeps")
    checked = 0
    records = glob.glob(os.path.join(ROOT, "experiments", "results", "*", "sweeps", "*"))
    for record in sorted(records):
        name = os.path.basename(record)
        points = sweep.points(_load(name, os.path.join(configs, f"{name}.py")).get_config())
        for run, config, _ in points:
            for kept in (os.path.join(record, "runs", run), os.path.join(record, "runs", run,
                                                                         sweep.PARTIAL)):
                if os.path.isfile(os.path.join(kept, "config.json")):  # finished / parked
                    assert sweep.config_difference(kept, config) == ""
                    checked += 1
    assert checked >= 20


def test_decayed_branches_start_from_their_constant_run(tmp_path):
    """decay_horizons: each point's constant run keeps the 75% checkpoints and every
    branch restarts there with a linear decay to 0 (PAPER.md §5's decayed variant)."""
    corpus = _corpus(tmp_path)
    config = SWEEP_CONFIG.format(corpus=str(corpus / "*.txt")).replace(
        's.grid = (("batch_size", (4, 8)), ("schedule.name", ("constant", "bogus")))',
        's.grid = (("optimizer.learning_rate", (0.1,)),)\n'
        '    s.base.batch_size = 4\n'
        '    s.decay_horizons = (10, 11)',
    ).replace("s.max_tokens = 256", "s.max_tokens = 2**11")
    config_path = tmp_path / "decay_config.py"
    config_path.write_text(config)
    sweep_dir = tmp_path / "sweep"
    result = _sweep(config_path, sweep_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    index = json.loads((sweep_dir / "index.json").read_text())
    assert index["lr=0.1_decay_D=2^10"] == {"steps": 8, "status": "done", "parent": "lr=0.1"}
    assert sum(p["status"] == "done" for p in index.values()) == 3
    runs = sweep_dir / "runs"
    assert {"6", "12", "16"} <= set(os.listdir(runs / "lr=0.1" / "checkpoints"))
    rows = read_rows(str(runs / "lr=0.1_decay_D=2^11" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [16]  # steps 13…16 of which every 4th is logged
    assert rows[-1]["lr"] == pytest.approx(0.1 / 4)  # η(15): 3 of the 4 decay steps done
    table = collect(str(sweep_dir))
    decayed = [r for r in table if r["schedule.name"] == "linear_decay"]
    assert sorted((r["log2_D"], r["optimizer.learning_rate"]) for r in decayed) == [
        (10, 0.1), (11, 0.1)]

    batch = _sweep(config_path, sweep_dir, "--mode=commands")
    assert "3 points, 3 finished, 0 to run." in batch.stdout
    assert not (sweep_dir / "commands.txt").exists()  # nothing to run
    (runs / "lr=0.1" / "metrics.jsonl").unlink()
    (runs / "lr=0.1_decay_D=2^11" / "metrics.jsonl").unlink()
    batch = _sweep(config_path, sweep_dir, "--mode=commands")
    assert "3 points, 1 finished, 2 to run." in batch.stdout
    first = (sweep_dir / "commands.txt").read_text().splitlines()
    assert len(first) == 1 and first[0].endswith("--workdir=" + str(runs / "lr=0.1"))
    branches = (sweep_dir / "commands_branches.txt").read_text().splitlines()
    assert len(branches) == 1 and "lr=0.1_decay_D=2^11" in branches[0]
    submit = (sweep_dir / "submit.sh").read_text()
    assert "--dependency=afterok:$jid" in submit and "slurm_branches.sh" in submit


def test_core_sets_are_disjoint_and_checked(monkeypatch):
    sweep = _sweep_module()
    monkeypatch.setattr(sweep.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 5})
    assert sweep.core_sets(2, 2) == [{0, 1}, {2, 3}]
    assert sweep.core_sets(5, 1) == [{0}, {1}, {2}, {3}, {5}]
    with pytest.raises(ValueError, match="needs 6 cores; this process may use 5"):
        sweep.core_sets(3, 2)


def _fake_run(directory, config, last_step):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "tokens": 8 * s}) + "\n" for s in range(1, last_step + 1)))


def test_select_and_prepare_runs_with_a_record(tmp_path):
    sweep = _sweep_module()
    points = [("a", {}, None), ("a_decay", {}, "a"), ("b", {}, None)]
    assert sweep.select(points, []) == {"a", "a_decay", "b"}
    assert sweep.select(points, ["a"]) == {"a", "a_decay"}
    with pytest.raises(ValueError, match=r"branches without their constant-LR run: \['a_decay'\]"):
        sweep.select(points, ["a_decay", "b"])
    with pytest.raises(ValueError, match=r"--only names no point of this sweep: \['c'\]; its "
                                         r"points are \['a', 'a_decay', 'b'\]"):
        sweep.select(points, ["c", "b"])

    base = json.loads(sweep.config_lib.base_config().to_json())
    run, branch = {**base, "steps": 4}, {**base, "steps": 2, "seed": 1}
    points = [("a", run, None), ("a_decay", branch, "a"), ("b", {**run, "seed": 2}, None)]
    record, sweep_dir = tmp_path / "record", tmp_path / "sweep"
    _fake_run(record / "runs" / "a", run, 4)
    _fake_run(record / "runs" / "b", {**run, "seed": 2}, 3)  # unfinished: not restored
    index = sweep.prepare_runs(points, str(sweep_dir), str(record))
    # "a" is recorded, but its branch still has to start from a's checkpoint: a runs again.
    assert {n: p["status"] for n, p in index.items()} == {"a": "todo", "a_decay": "todo",
                                                           "b": "todo"}
    assert not (sweep_dir / "runs" / "a" / "metrics.jsonl").exists()
    _fake_run(record / "runs" / "a_decay", branch, 2)
    index = sweep.prepare_runs(points, str(sweep_dir), str(record))
    assert {n: p["status"] for n, p in index.items()} == {"a": "done", "a_decay": "done",
                                                           "b": "todo"}
    assert index["a_decay"]["parent"] == "a"
    for name in ("a", "a_decay"):
        assert (sweep_dir / "runs" / name / "metrics.jsonl").read_text() == (
            record / "runs" / name / "metrics.jsonl").read_text()
    _fake_run(sweep_dir / "runs" / "b", {**run, "seed": 2}, 4)  # finished here: recorded
    _fake_run(record / "runs" / "b" / "partial", {**run, "seed": 2}, 4)  # parked at its end
    assert sweep.prepare_runs(points, str(sweep_dir), str(record))["b"]["status"] == "done"
    assert (record / "runs" / "b" / "metrics.jsonl").read_text().count("\n") == 4
    assert not (record / "runs" / "b" / "partial").exists()  # the parked state is dropped

    _fake_run(record / "runs" / "c", {**run, "steps": 3}, 3)
    with pytest.raises(ValueError, match=r"the record .*c was made with a different config "
                                         r"\(steps: 3 there, 4 here\); delete it"):
        sweep.prepare_runs([("c", run, None)], str(sweep_dir), str(record))


def _fake_checkpoints(run_dir, steps):
    for step in steps:
        (run_dir / "checkpoints" / str(step)).mkdir(parents=True)
        (run_dir / "checkpoints" / str(step) / "state").write_text(f"state at {step}")


class Killed(Exception):
    pass


def _killed_copytree(source, target, **_):
    os.makedirs(target)
    raise Killed


def test_parking_keeps_branch_checkpoints_and_a_kill_loses_nothing(tmp_path, monkeypatch):
    """A parked run keeps its latest checkpoint and the kept ones before it (its branches
    start there); a restore adds every parked checkpoint the run directory lacks and keeps
    its own. A kill while parking or restoring leaves no half-copied checkpoint under a
    step's name (nor debris once the next park or restore is done), and the next one
    completes the copy."""
    sweep = _sweep_module()
    config = {**json.loads(sweep.config_lib.base_config().to_json()), "steps": 20,
              "keep_steps": [6]}
    run, record = tmp_path / "run", tmp_path / "record"
    parked = record / "partial"
    _fake_run(run, config, 12)
    _fake_checkpoints(run, (0, 6, 10, 12))
    assert sweep.park_run(str(run), str(record)) == 12
    assert sweep.checkpoint_steps(str(parked)) == {6, 12}

    here = tmp_path / "here"  # has the branch checkpoint at 6, not its parent's progress
    _fake_checkpoints(here, (0, 6))
    assert sweep.restore_parked(str(record), str(here), config) == 12
    assert sweep.checkpoint_steps(str(here)) == {0, 6, 12}

    fresh = tmp_path / "fresh"  # a new machine
    with monkeypatch.context() as m:
        m.setattr(sweep.shutil, "copytree", _killed_copytree)
        with pytest.raises(Killed):
            sweep.restore_parked(str(record), str(fresh), config)
    assert sweep.checkpoint_steps(str(fresh)) == set()
    assert sweep.restore_parked(str(record), str(fresh), config) == 12  # restored again
    assert sweep.checkpoint_steps(str(fresh)) == {6, 12}
    assert (fresh / "checkpoints" / "12" / "state").read_text() == "state at 12"
    assert (fresh / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()
    assert sorted(os.listdir(fresh)) == ["checkpoints", "config.json", "metrics.jsonl"]

    _fake_run(fresh, config, 16)  # goes on to step 16, where it is parked again
    _fake_checkpoints(fresh, (16,))
    with monkeypatch.context() as m:  # the park killed, in an earlier sweep process
        m.setattr(sweep.shutil, "copytree", _killed_copytree)
        m.setattr(sweep.os, "getpid", lambda: 1)
        with pytest.raises(Killed):
            sweep.park_run(str(fresh), str(record))
    assert sweep.checkpoint_steps(str(parked)) == {6, 12}
    assert (parked / "checkpoints" / "12" / "state").read_text() == "state at 12"
    assert sweep.park_run(str(fresh), str(record)) == 16
    assert sweep.checkpoint_steps(str(parked)) == {6, 16}  # the earlier latest is dropped
    assert os.listdir(record) == ["partial"]
    assert sorted(os.listdir(parked)) == ["checkpoints", "config.json", "metrics.jsonl"]


def test_sigterm_parks_running_runs_and_a_fresh_sweep_resumes_them_bitwise(tmp_path):
    """SIGTERM to a local sweep (to its process only: the sweep passes it on; a group
    signal reaches the runs anyway): the running run saves and stops, its checkpoint is
    kept under the record directory, and a sweep in a new directory (a new machine)
    resumes it to the uninterrupted run's metrics, bit for bit."""
    corpus = _corpus(tmp_path)
    config_path = tmp_path / "sweep_config.py"
    config_path.write_text(
        SWEEP_CONFIG.format(corpus=str(corpus / "*.txt"))
        .replace('("batch_size", (4, 8)), ("schedule.name", ("constant", "bogus"))',
                 '("batch_size", (4,)),')
        .replace("s.max_tokens = 256",
                 "s.max_tokens = 32 * 4 * 400\n    base.checkpoint_every = 20")
    )
    record, name = tmp_path / "record", "bs=4"
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
           f"--config={config_path}", "--workers=1", f"--record_dir={record}"]
    first = subprocess.Popen([*cmd, f"--sweep_dir={tmp_path / 'first'}"], start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "first" / "runs" / name / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 240
        while not any(r["step"] >= 40 for r in read_rows(str(metrics))):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 143, out[-2000:]
    assert "parked 1 stopped runs" in out
    parked = record / "runs" / name / "partial"
    step = max(int(d) for d in os.listdir(parked / "checkpoints"))
    assert 40 <= step < 400 and not (record / "runs" / name / "metrics.jsonl").exists()

    second = subprocess.run([*cmd, f"--sweep_dir={tmp_path / 'second'}"],
                            capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resumes from its parked checkpoint at step {step}" in second.stdout
    assert not parked.exists()  # finished and recorded: the parked state is dropped
    whole = subprocess.run([*cmd[:-1], f"--sweep_dir={tmp_path / 'whole'}"],
                           capture_output=True, text=True, timeout=400)
    assert whole.returncode == 0, whole.stderr[-2000:]
    timing = ("tokens_per_s", "model_flops_per_s")
    rows = lambda d: [{k: v for k, v in r.items() if k not in timing}
                      for r in read_rows(str(tmp_path / d / "runs" / name / "metrics.jsonl"))]
    # The resumed run has one row more: the one logged at the step SIGTERM stopped it.
    on_schedule = lambda rs: [r for r in rs if r["step"] % 4 == 0]  # base.log_every
    assert [r["step"] for r in rows("second") if r["step"] % 4] == ([step] if step % 4 else [])
    assert on_schedule(rows("second")) == rows("whole") and rows("whole")[-1]["step"] == 400
    assert rows(record) == rows("second")

"""The trainer: it learns, resumes exactly after kill -9, survives a corrupt checkpoint,
stops cleanly on NaN, and gives the same step on 1, 8 devices and 2 processes; 2 processes
stop together on SIGTERM to either, on an error of one, and on NaN."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from scion_jax.data import make_eval_batches
from scion_jax.train import base_config, train, trainer
from scion_jax.train.config import eval_batch_count, validate
from scion_jax.train.metrics import norm_log_device, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_KEYS = ("tokens_per_s", "model_flops_per_s")
WORDS = (
    "the king and queen of denmark walk in the garden at night while the ghost of "
    "the old king speaks to his son about a murder most foul and strange "
).split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Twelve small English-like 'documents' (a learnable language, not random bytes)."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(12):
        start = rng.integers(0, len(WORDS), size=400)
        text = " ".join(" ".join(WORDS[s : s + 6]) for s in start)
        (d / f"doc{i:02d}.txt").write_text(text)
    return str(d / "*.txt")


def tiny_config(corpus: str, **overrides):
    c = base_config()
    c.steps, c.batch_size, c.seq_len = 30, 8, 32
    c.model.update(d_model=64, n_layers=2, n_heads=1, head_dim=32)
    c.optimizer.learning_rate = 2.0**-4
    c.optimizer.lr_scales.hidden = 1 / 8
    c.data.source = corpus
    c.log_every, c.norm_every, c.eval_every, c.checkpoint_every = 5, 10, 10, 10
    c.mesh.data = 1  # one device (fast to compile); the sharding tests set their own mesh
    c.eval_batches = 2
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def _run_cmd(config, workdir, *extra):
    """`experiments/run.py` on `config`, saved as JSON beside the workdir."""
    json_path = f"{workdir}_config.json"
    with open(json_path, "w") as f:
        f.write(config.to_json())
    return [
        sys.executable,
        os.path.join(ROOT, "experiments", "run.py"),
        f"--config={os.path.join(ROOT, 'experiments', 'configs', 'from_json.py')}:{json_path}",
        f"--workdir={workdir}",
        *extra,
    ]


def _final_params(workdir):
    ckpt = os.path.join(workdir, "checkpoints")
    step = max(int(s) for s in os.listdir(ckpt) if s.isdigit())
    path = os.path.join(ckpt, str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    # Onto one device, whatever devices and processes saved it.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata,
    )
    return step, checkpointer.restore(path, target)["params"]


def _rows_without_timing(workdir):
    return [
        {k: v for k, v in r.items() if k not in TIMING_KEYS}
        for r in read_rows(os.path.join(workdir, "metrics.jsonl"))
    ]


def _assert_trees_equal(a, b, **tol):
    flat_a, flat_b = _flatten(a), _flatten(b)
    assert flat_a.keys() == flat_b.keys()
    for k in flat_a:
        if tol:
            np.testing.assert_allclose(flat_a[k], flat_b[k], err_msg=k, **tol)
        else:
            np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(tree)}


def test_tiny_run_learns(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    row = train(tiny_config(corpus), tmp_path.name)  # a relative workdir, as `make run` uses
    rows = read_rows(os.path.join(tmp_path, "metrics.jsonl"))
    assert rows[0]["step"] == 0 and rows[0]["output_norm"] == pytest.approx(1.0, rel=1e-4)
    assert rows[0]["eval_loss"] == pytest.approx(math.log(256), abs=0.1)
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 20, 25, 30]
    assert all({"step", "tokens", "loss", "lr", "tokens_per_s"} <= r.keys() for r in rows[1:])
    assert rows[-1]["tokens"] == 30 * 8 * 32
    assert row["loss"] < 0.6 * math.log(256) and row["eval_loss"] < 0.6 * math.log(256)
    norms = [r["output_norm"] for r in rows if "output_norm" in r]
    assert norms == sorted(norms) and norms[-1] > 1.5  # grows with steps (PAPER.md §6.1)
    assert any(k.startswith("rms_to_rms/layers/") for k in rows[-1])
    assert os.path.getsize(os.path.join(tmp_path, "summary.png")) > 10_000
    assert os.listdir(os.path.join(tmp_path, "tensorboard"))


def test_a_run_that_would_repeat_data_fails_before_training(corpus, tmp_path):
    config = tiny_config(corpus, steps=100_000, **{"data.num_epochs": 1})
    with pytest.raises(ValueError, match="would repeat data"):
        train(config, str(tmp_path))
    assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


def test_kill_and_resume_is_exact(corpus, tmp_path):
    config = tiny_config(corpus, steps=20, checkpoint_every=5)
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_run_cmd(config, full), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(
        _run_cmd(config, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = killed / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and any(s.isdigit() and int(s) >= 5 for s in os.listdir(ckpt)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [int(s) for s in os.listdir(ckpt) if s.isdigit()]
    assert max(done) < 20, "the run finished before it could be killed; make it longer"
    subprocess.run(_run_cmd(config, killed), check=True, capture_output=True, timeout=300)
    step_a, params_a = _final_params(full)
    step_b, params_b = _final_params(killed)
    assert step_a == step_b == 20
    _assert_trees_equal(params_a, params_b)  # bitwise on CPU
    assert _rows_without_timing(full) == _rows_without_timing(killed)


def test_decayed_branch_equals_an_uninterrupted_decayed_run(corpus, tmp_path):
    """PAPER.md §5's decayed variant: branch off a constant-LR run at 75% of the steps and
    decay linearly over the rest = a run with that schedule from the start, bitwise."""
    parent, branch, whole = tmp_path / "constant", tmp_path / "branch", tmp_path / "decayed"
    constant = tiny_config(corpus, steps=40, keep_steps=(15,), keep_checkpoints=1)
    train(constant, str(parent))
    assert sorted(int(s) for s in os.listdir(parent / "checkpoints") if s.isdigit()) == [15, 40]
    decayed = {"steps": 20, "schedule.name": "linear_decay", "schedule.decay_fraction": 0.25}
    train(tiny_config(corpus, **decayed, **{"branch.workdir": str(parent), "branch.step": 15}),
          str(branch))
    train(tiny_config(corpus, **decayed), str(whole))
    _assert_trees_equal(_final_params(branch)[1], _final_params(whole)[1])
    rows = _rows_without_timing(branch)
    assert rows == [r for r in _rows_without_timing(whole) if r["step"] > 15]
    assert rows[-1]["lr"] == pytest.approx(2.0**-4 / 5)  # η at the last step: 1/5 of the way
    with pytest.raises(FileNotFoundError, match=r"No checkpoint at step 10 .* steps \[15, 40\]"):
        train(tiny_config(corpus, **decayed, **{"branch.workdir": str(parent), "branch.step": 10}),
              str(tmp_path / "bad"))


def test_eval_sequences_give_every_batch_size_the_same_held_out_set(corpus):
    """The trainer's held-out batches: with `eval_sequences` the same sequences for every
    batch size (so held-out losses compare across B), with `eval_batches` B per batch."""

    def held_out(batch_size, **overrides):
        c = tiny_config(corpus, batch_size=batch_size, **overrides)
        batches = make_eval_batches(
            c.data, seq_len=c.seq_len, batch_size=c.batch_size, num_batches=eval_batch_count(c)
        )
        assert all(b["inputs"].shape == (batch_size, c.seq_len) for b in batches)
        return np.concatenate([np.concatenate([b["inputs"], b["targets"][:, -1:]], 1)
                               for b in batches])

    np.testing.assert_array_equal(held_out(4, eval_sequences=8), held_out(8, eval_sequences=8))
    assert len(held_out(4)) == 4 * 2 and len(held_out(8)) == 8 * 2  # eval_batches = 2


def test_spread_held_out_set_is_logged_beside_the_first_and_changes_no_training(
    corpus, tmp_path
):
    """`eval_spread_sequences`: a second held-out loss at every evaluation; training, the
    first held-out set and the norms are bitwise those of the run without it."""
    plain = train(tiny_config(corpus, steps=20), str(tmp_path / "plain"))
    spread = train(tiny_config(corpus, steps=20, eval_spread_sequences=16), str(tmp_path / "s"))
    assert plain["loss"] == spread["loss"]
    rows = _rows_without_timing(tmp_path / "s")
    assert [r["step"] for r in rows if "eval_spread_loss" in r] == [0, 10, 20]
    assert all(r.pop("eval_spread_loss", 0) != r.get("eval_loss") for r in rows)
    assert rows == _rows_without_timing(tmp_path / "plain")
    with pytest.raises(ValueError, match="eval_spread_sequences=12 must be 0 or a positive"):
        validate(tiny_config(corpus, eval_spread_sequences=12), n_devices=1)


def test_sigterm_saves_and_exits(corpus, tmp_path):
    config = tiny_config(corpus, steps=400, checkpoint_every=1000, log_every=1)
    proc = subprocess.Popen(
        _run_cmd(config, tmp_path / "run"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and len(read_rows(str(metrics))) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    saved = max(int(s) for s in os.listdir(tmp_path / "run" / "checkpoints") if s.isdigit())
    assert 3 <= saved < 400 and read_rows(str(metrics))[-1]["step"] == saved


def test_sigterm_in_the_last_step_finishes_the_run(corpus, tmp_path, monkeypatch):
    """A stop asked for in the final step: the run has finished, it is not preempted."""
    monkeypatch.setattr(trainer.Preemption, "stop", lambda self: True)  # SIGTERM in each step
    row = train(tiny_config(corpus, steps=1), str(tmp_path))
    assert row["step"] == 1 and "preempted" not in row
    assert _steps_saved(tmp_path) == [0, 1]


def test_fail_together_needs_jax_distributed():
    with pytest.raises(RuntimeError, match=r"needs jax.distributed.initialize\(\)"):
        trainer._FailTogether()  # this process has no jax.distributed client


def test_corrupt_latest_checkpoint_resumes_from_previous(corpus, tmp_path, caplog):
    train(tiny_config(corpus, steps=20), str(tmp_path))
    latest = tmp_path / "checkpoints" / "20" / "state"
    for root, _, files in os.walk(latest):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    before = _rows_without_timing(tmp_path)
    row = train(tiny_config(corpus, steps=25), str(tmp_path))
    assert "Checkpoint at step 20 is unreadable" in caplog.text
    after = _rows_without_timing(tmp_path)
    assert after[: len(before)] == before  # steps 11-20 recomputed identically from step 10
    assert row["step"] == 25


def test_nan_loss_stops_with_the_step(corpus, tmp_path):
    config = tiny_config(corpus, log_every=1, **{"optimizer.learning_rate": 1e30})
    with pytest.raises(FloatingPointError, match=r"at step \d+.*last good checkpoint \(step 0\)"):
        train(config, str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints") == ["0"]


# fp32 compute and Newton–Schulz: bf16 would amplify the reduction-order differences of the
# data-parallel gradient mean into ~1e-3 relative differences of the update.
SHARDED = dict(
    steps=3,
    log_every=1,
    norm_every=3,
    eval_every=3,
    checkpoint_every=3,
    **{
        "optimizer.ns_dtype": "float32",
        "model.compute_dtype": "float32",
        "mesh.data": 4,
        "mesh.fsdp": 2,
    },
)


@pytest.fixture(scope="module")
def sharded_run(corpus, tmp_path_factory):
    """(final row, workdir) of a 3-step run on 8 devices, data 4 × fsdp 2."""
    workdir = str(tmp_path_factory.mktemp("sharded"))
    return train(tiny_config(corpus, **SHARDED), workdir), workdir


def test_sharded_step_equals_single_device(corpus, tmp_path, sharded_run):
    sharded, sharded_dir = sharded_run
    single_cfg = tiny_config(corpus, **{**SHARDED, "mesh.data": 1, "mesh.fsdp": 1})
    single = train(single_cfg, str(tmp_path))  # on the first device alone
    assert sharded["loss"] == pytest.approx(single["loss"], rel=1e-4)
    assert sharded["output_norm"] == pytest.approx(single["output_norm"], rel=1e-4)
    _assert_trees_equal(
        _final_params(sharded_dir)[1], _final_params(tmp_path)[1], rtol=1e-4, atol=1e-6
    )


def test_norm_log_runs_on_one_cpu_device_of_a_mesh():
    """The CPU devices of one process share the host's cores: the trainer computes the norm
    log on one of them (the sharded run above checks its numbers against one device's)."""
    devices = jax.devices()
    assert norm_log_device(jax.make_mesh((1,), ("data",), devices=devices[:1])) is None
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), devices=devices[:8])
    assert norm_log_device(mesh) == mesh.devices.flat[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_run(corpus, tmp_path, sharded_run):
    config = tiny_config(corpus, **SHARDED)
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [
        subprocess.Popen(
            _run_cmd(
                config,
                tmp_path / "multi",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs[0][-3000:] + outs[1][-3000:]
    multi = read_rows(os.path.join(tmp_path / "multi", "metrics.jsonl"))
    single, _ = sharded_run  # the same 8-device mesh in one process
    assert [r["step"] for r in multi] == [0, 1, 2, 3]
    assert multi[-1]["loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert multi[-1]["output_norm"] == pytest.approx(single["output_norm"], rel=1e-5)
    assert json.load(open(tmp_path / "multi" / "config.json"))["steps"] == 3


# The pod of issue 28 on loopback: 2 processes × 2 CPU devices, mesh data 2 × fsdp 2.
PAIR = dict(steps=30, log_every=1, checkpoint_every=10, **{"mesh.data": 2, "mesh.fsdp": 2})
PAIR_TIMEOUT_S = 240


def _start_pair(config, workdir, fault_rank=None):
    """experiments/run.py (tests/run_with_fault.py on `fault_rank`) as 2 processes joined on
    127.0.0.1; each one's output goes to `<workdir>_<rank>.log`."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = []
    for rank in range(2):
        cmd = _run_cmd(
            config,
            workdir,
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={rank}",
        )
        if rank == fault_rank:
            cmd[1] = os.path.join(ROOT, "tests", "run_with_fault.py")
        with open(f"{workdir}_{rank}.log", "a") as log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _finish_pair(procs, workdir, timeout=PAIR_TIMEOUT_S) -> list[int]:
    """The processes' exit codes; kills any still running after `timeout` s (and fails)."""
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.time(), 0.1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the processes did not end in {timeout} s:\n" + _pair_logs(workdir))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [p.returncode for p in procs]


def _pair_logs(workdir) -> str:
    return "\n".join(open(f"{workdir}_{rank}.log").read()[-3000:] for rank in range(2))


def _wait_for_step(workdir, step, procs):
    """Until process 0 has logged `step` (log_every = 1)."""
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + PAIR_TIMEOUT_S
    while time.time() < deadline and all(p.poll() is None for p in procs):
        rows = read_rows(metrics)
        if rows and rows[-1]["step"] >= step:
            return
        time.sleep(0.01)
    pytest.fail(f"no step {step} logged:\n" + _pair_logs(workdir))


def _steps_saved(workdir) -> list[int]:
    return sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())


def test_two_process_run_stops_together_and_resumes_exactly(corpus, tmp_path):
    """SIGTERM to rank 1 alone, then (resumed) to both a step apart: each time both
    processes save one checkpoint at one step and exit 143. Then (resumed) an error on rank
    1: both end promptly, with exit code 1. The run resumed once more to its end equals the
    uninterrupted one bit for bit."""
    config = tiny_config(corpus, **PAIR)
    full, run = tmp_path / "full", tmp_path / "run"
    assert _finish_pair(_start_pair(config, full), full) == [0, 0], _pair_logs(full)

    procs = _start_pair(config, run)  # SIGTERM to rank 1 only
    _wait_for_step(run, 3, procs)
    procs[1].send_signal(signal.SIGTERM)
    assert _finish_pair(procs, run) == [143, 143], _pair_logs(run)
    first = _steps_saved(run)[-1]  # the step both stopped after
    assert 3 < first < 10  # the signal is read at most 2 steps later
    assert read_rows(os.path.join(run, "metrics.jsonl"))[-1]["step"] == first

    procs = _start_pair(config, run)  # SIGTERM to both, a step apart
    _wait_for_step(run, first + 2, procs)
    procs[0].send_signal(signal.SIGTERM)
    _wait_for_step(run, first + 3, procs)
    procs[1].send_signal(signal.SIGTERM)
    assert _finish_pair(procs, run) == [143, 143], _pair_logs(run)
    second = _steps_saved(run)[-1]
    assert first + 3 < second < 20
    assert read_rows(os.path.join(run, "metrics.jsonl"))[-1]["step"] == second

    procs = _start_pair(config, run, fault_rank=1)  # an error on rank 1 only
    _wait_for_step(run, 21, procs)
    procs[1].send_signal(signal.SIGUSR1)
    start = time.time()
    assert _finish_pair(procs, run) == [1, 1], _pair_logs(run)
    assert time.time() - start < 30
    assert "another one failed (process 1: OSError: injected" in _pair_logs(run)
    assert _steps_saved(run)[-1] == 20

    procs = _start_pair(config, run, fault_rank=0)  # and on rank 0, the coordinator
    _wait_for_step(run, 24, procs)  # past the steps logged before rank 1's error
    procs[0].send_signal(signal.SIGUSR1)
    start = time.time()
    assert _finish_pair(procs, run) == [1, 1], _pair_logs(run)
    assert time.time() - start < 30
    assert "another one failed (process 0: OSError: injected" in _pair_logs(run)
    assert _steps_saved(run)[-1] == 20

    assert _finish_pair(_start_pair(config, run), run) == [0, 0], _pair_logs(run)
    step_full, params_full = _final_params(full)
    step_run, params_run = _final_params(run)
    assert step_full == step_run == 30
    _assert_trees_equal(params_full, params_run)  # bitwise
    assert _rows_without_timing(run) == _rows_without_timing(full)


def test_two_process_nan_stops_both(corpus, tmp_path):
    """The loss is the global batch's: a NaN stops both processes at the same step."""
    config = tiny_config(corpus, **{**PAIR, "optimizer.learning_rate": 1e30})
    run = tmp_path / "run"
    assert _finish_pair(_start_pair(config, run), run) == [1, 1], _pair_logs(run)
    for rank in range(2):
        assert "FloatingPointError: Loss is" in open(f"{run}_{rank}.log").read()
    assert _steps_saved(run) == [0]

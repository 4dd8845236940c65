"""Run a grid of `run.py` runs: locally in parallel, or as a SLURM array / command list.

    python experiments/sweep.py --config=experiments/configs/sweeps/cpu_lr_batch.py \
        --sweep_dir=workdirs/sweeps/cpu_lr_batch --workers=2

A sweep config's ``get_config()`` returns a ConfigDict with
  base:       a run config (see scion_jax.train.config.base_config),
  grid:       (("dotted.key", (values, ...)), ...): the product is the set of points
              (a tuple of keys takes tuples of values, set together),
  max_tokens: each run trains for max_tokens / (batch_size · seq_len) steps (the longest
              horizon; shorter horizons D = 2^k are read off the same constant-LR run,
              PAPER.md §5),
  decay_horizons (optional): log2 D values; for each, every point also gets the decayed
              variant: a run branched off the constant-LR run at 75% of D (it keeps that
              checkpoint) that decays η linearly to 0 over the last 25% (`schedule`
              `linear_decay`), named `<point>_decay_D=2^k`.
Each point is one run directory under `<sweep_dir>/runs/`. Rerunning the command skips
finished runs and resumes partial ones from their checkpoints; `index.json` (rewritten
atomically by this process only) records every point and its status. `--only` runs a subset
of the points. `--record_dir` keeps every finished run's `config.json` and `metrics.jsonl`
(what the analysis reads; no checkpoints) in a second directory laid out like the sweep
directory, e.g. one under version control: a sweep started on a fresh machine restores its
finished runs from there instead of running them again. SIGTERM to the local sweep (or its
process group) parks it: every running run saves a checkpoint and stops, no new run starts,
and with `--record_dir` each stopped run's config, metrics, latest checkpoint and the
checkpoints before it that its decayed branches start from are kept in
`<record_dir>/runs/<name>/partial/` (≈ 1 MB per checkpoint at d 64), from which a sweep on
another machine resumes the run bit for bit. Locally a branch starts as soon as its
constant-LR run finishes; in batch modes the branches are a second
command list / job array that waits for the first (`submit.sh`).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading

from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from scion_jax.analysis.collect import atomic_write_text, flatten
from scion_jax.train import config as config_lib
from scion_jax.train.metrics import read_rows

_CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config file.")
flags.DEFINE_string("sweep_dir", None, "Output directory of the sweep.", required=True)
flags.DEFINE_integer("workers", 2, "Runs in parallel (local mode).")
flags.DEFINE_integer("devices_per_run", 1, "Fake CPU devices per local run.")
flags.DEFINE_integer(
    "cpus_per_run",
    0,
    "Local mode: pin each worker's runs to their own this many CPU cores (0: no pinning). "
    "Small CPU runs go faster one core each than sharing all of them "
    "(experiments/benchmarks/README.md).",
)
flags.DEFINE_list("only", [], "Run only these points (run names, as in index.json).")
flags.DEFINE_string(
    "record_dir",
    None,
    "Keep each finished run's config.json and metrics.jsonl in <record_dir>/runs/<name>/, and "
    "restore finished runs from there (e.g. a directory under version control). In the batch "
    "modes runs are recorded by the next call of this command. Local runs stopped by SIGTERM "
    "are parked in <record_dir>/runs/<name>/partial/ (config, metrics, latest checkpoint and "
    "the kept ones before it), from which a later sweep resumes them.",
)
flags.DEFINE_enum(
    "mode",
    "local",
    ["local", "slurm", "commands"],
    "local: run here; slurm: write a job-array script; commands: write one "
    "command per point (e.g. for TPU pod hosts).",
)
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "experiments", "run.py")
FROM_JSON = os.path.join(ROOT, "experiments", "configs", "from_json.py")
SHORT = {
    "optimizer.learning_rate": "lr",
    "batch_size": "bs",
    "model.d_model": "d",
    "model.n_layers": "L",
    "model.n_heads": "heads",
    "optimizer.name": "opt",
    "optimizer.momentum": "mom",
    "optimizer.weight_decay": "wd",
    "schedule.name": "sched",
    "seed": "seed",
    "eval_every": "ev",
    "optimizer.lr_scales.hidden": "hid",
    "optimizer.lr_scales.input": "in",
    "optimizer.lr_scales.output": "out",
}


def _set(config, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
        node = node[p]
    if leaf not in node:
        raise ValueError(f"Sweep grid key {dotted!r} is not a config key.")
    node[leaf] = value


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def points(sweep) -> list[tuple[str, dict, str | None]]:
    """(run name, run config dict, parent run name or None) for every run, in a stable
    order: each grid point's constant-LR run, then its decayed branches.

    A grid entry's key may be a tuple of keys set together, with tuples of values, e.g.
    ``(("model.d_model", "model.n_heads"), ((128, 2), (256, 4)))`` keeps head_dim fixed.
    """
    keys = [(k,) if isinstance(k, str) else tuple(k) for k, _ in sweep.grid]
    out = []
    for values in itertools.product(*(tuple(v) for _, v in sweep.grid)):
        config = sweep.base.copy_and_resolve_references()
        parts = []
        for key, value in zip(keys, values, strict=True):
            value = (value,) if len(key) == 1 else tuple(value)
            for k, v in zip(key, value, strict=True):
                _set(config, k, v)
                parts.append(f"{SHORT.get(k, k.split('.')[-1])}={_fmt(v)}")
        tokens_per_step = config.batch_size * config.seq_len
        config.steps = max(1, int(sweep.max_tokens) // tokens_per_step)
        name = "_".join(parts)
        branches = []
        for k in sweep.get("decay_horizons", ()):
            if 2**k > sweep.max_tokens:
                raise ValueError(f"decay horizon 2^{k} is beyond max_tokens={sweep.max_tokens}.")
            branch = config.copy_and_resolve_references()
            branch.steps = 2**k // tokens_per_step
            branch.schedule.update(name="linear_decay", decay_fraction=0.25)
            start = config_lib.decay_start(branch.steps, 0.25)
            if not 0 < start < branch.steps:
                raise ValueError(f"decay horizon 2^{k} is {branch.steps} steps: too few to decay.")
            branch.branch.update(workdir=f"../{name}", step=start)
            branches.append((f"{name}_decay_D=2^{k}", json.loads(branch.to_json()), name))
            config.keep_steps = tuple(sorted({*config.keep_steps, start}))
        out.append((name, json.loads(config.to_json()), None))
        out.extend(branches)
    return out


def config_difference(run_dir: str, config: dict) -> str:
    """How the config a run directory executes (its stored JSON over today's defaults, as
    `from_json.py` loads it) differs from `config` (up to 4 keys), or "" if it does not."""
    with open(os.path.join(run_dir, "config.json")) as f:
        stored = config_lib.base_config()
        stored.update(json.load(f))
    stored, wanted = flatten(json.loads(stored.to_json())), flatten(config)
    differ = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
    return ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} here" for k in differ[:4])


def check_same_config(run_dir: str, config: dict) -> None:
    """A run directory made by an earlier version of the sweep (different defaults or
    grid) must not be mixed into this one."""
    difference = config_difference(run_dir, config)
    if difference:
        raise ValueError(
            f"{run_dir} was made with a different config ({difference}); move it out of the "
            "sweep directory to rerun the point, or restore the sweep config it came from."
        )


def is_finished(run_dir: str, steps: int) -> bool:
    """A run is finished when its metrics' last complete row is its final step."""
    rows = read_rows(os.path.join(run_dir, "metrics.jsonl"))
    return bool(rows) and rows[-1].get("step") == steps and not rows[-1].get("preempted")


RECORDED = ("config.json", "metrics.jsonl")
PARTIAL = "partial"  # a stopped run's resumable state, under its record directory
# How a run ends when the sweep is stopped: not started (None), saved and stopped by SIGTERM
# (run.py exits 143), or killed by it before its handler was installed.
STOPPED = (None, 143, -signal.SIGTERM)


def _remove(tree: str, trash: str) -> None:
    """Delete `tree` after renaming it to `trash` (cleared first): a kill never leaves it
    half-deleted under its own name."""
    shutil.rmtree(trash, ignore_errors=True)
    os.rename(tree, trash)
    shutil.rmtree(trash)


def record_run(run_dir: str, record_dir: str) -> None:
    """Copy a finished run's RECORDED files to `record_dir` (each written atomically) and
    drop its parked state there, if any."""
    os.makedirs(record_dir, exist_ok=True)
    for name in RECORDED:
        with open(os.path.join(run_dir, name)) as f:
            atomic_write_text(os.path.join(record_dir, name), f.read())
    parked = os.path.join(record_dir, PARTIAL)
    if os.path.isdir(parked):
        _remove(parked, f"{parked}.tmp")


def checkpoint_steps(run_dir: str) -> set[int]:
    """The steps of the run's complete checkpoints (orbax names one by its step only once
    committed)."""
    directory = os.path.join(run_dir, "checkpoints")
    return {int(d) for d in os.listdir(directory) if d.isdigit()} if os.path.isdir(
        directory) else set()


def _copy_resumable(source: str, target: str, steps: set[int]) -> None:
    """Copy run directory `source`'s RECORDED files, then those of its checkpoints at `steps`
    that `target` lacks, into `target`. Each is written under a temporary name and renamed
    into place, the checkpoints last: a kill leaves nothing half-written under its name, at
    worst metrics ahead of the latest checkpoint (which resuming from it cuts back)."""
    os.makedirs(os.path.join(target, "checkpoints"), exist_ok=True)
    for name in RECORDED:
        with open(os.path.join(source, name)) as f:
            atomic_write_text(os.path.join(target, name), f.read())
    building = os.path.join(target, "checkpoints.tmp")
    shutil.rmtree(building, ignore_errors=True)  # left by a kill
    for step in sorted(steps - checkpoint_steps(target)):  # the latest last
        shutil.copytree(os.path.join(source, "checkpoints", str(step)), building)
        os.rename(building, os.path.join(target, "checkpoints", str(step)))


def park_run(run_dir: str, record_dir: str) -> int | None:
    """Keep a stopped run's config, metrics, latest checkpoint and the checkpoints up to it
    that its config keeps (`keep_steps`: where its decayed branches start) in
    `record_dir/partial`; the latest checkpoint's step, or None when the run has none past
    step 0 (nothing to keep)."""
    saved = checkpoint_steps(run_dir)
    step = max(saved, default=None)
    if not step:
        return None
    with open(os.path.join(run_dir, "config.json")) as f:
        steps = {step} | (saved & set(json.load(f)["keep_steps"]))
    parked = os.path.join(record_dir, PARTIAL)
    _copy_resumable(run_dir, parked, steps)
    for stale in checkpoint_steps(parked) - steps:  # an earlier park's latest
        _remove(os.path.join(parked, "checkpoints", str(stale)),
                os.path.join(parked, "checkpoints.tmp"))
    return step


def restore_parked(record_dir: str, run_dir: str, config: dict) -> int | None:
    """Start `run_dir` from its parked state in `record_dir` when that is further on than
    the run directory's own checkpoints (every parked checkpoint the run directory lacks
    is copied); the step it resumes from, or None."""
    parked = os.path.join(record_dir, PARTIAL)
    steps = checkpoint_steps(parked)
    step = max(steps, default=None)
    if step is None or step <= max(checkpoint_steps(run_dir), default=0):
        return None
    difference = config_difference(parked, config)
    if difference:
        raise ValueError(f"the parked run {parked} was made with a different config "
                         f"({difference}); delete it to start the point afresh.")
    _copy_resumable(parked, run_dir, steps)
    return step


def finished_record(record_dir: str, config: dict) -> bool:
    """Whether `record_dir` holds a finished run of this point (a record of another config
    is an error: it would stand for this point in every analysis)."""
    if not all(os.path.isfile(os.path.join(record_dir, n)) for n in RECORDED):
        return False
    difference = config_difference(record_dir, config)
    if difference:
        raise ValueError(
            f"the record {record_dir} was made with a different config ({difference}); "
            "delete it to rerun the point, or restore the sweep config it came from."
        )
    return is_finished(record_dir, config["steps"])


def prepare_runs(
    all_points: list[tuple[str, dict, str | None]], sweep_dir: str, record_dir: str | None
) -> dict[str, dict]:
    """Make every point's run directory (its config.json checked or written) and return
    the index: {name: {"steps", "status": "done" | "todo", "parent" (branches)}}.

    With `record_dir`: runs finished here are recorded there; a run not finished here is
    restored from its finished record, unless it is a constant-LR run one of whose branches
    still has to run (the branch starts from the run's checkpoint, which a record does not
    keep: the run is trained again).
    """
    run_dir = lambda name: os.path.join(sweep_dir, "runs", name)
    record = lambda name: os.path.join(record_dir, "runs", name)
    here, recorded = {}, {}
    for name, config, _ in all_points:
        os.makedirs(run_dir(name), exist_ok=True)
        if os.path.exists(os.path.join(run_dir(name), "config.json")):
            check_same_config(run_dir(name), config)
        else:
            atomic_write_text(os.path.join(run_dir(name), "config.json"),
                              json.dumps(config, indent=2))
        here[name] = is_finished(run_dir(name), config["steps"])
        recorded[name] = bool(record_dir) and not here[name] and finished_record(
            record(name), config)
    needed = {parent for name, _, parent in all_points
              if parent and not (here[name] or recorded[name])}
    index = {}
    for name, config, parent in all_points:
        if recorded[name] and name not in needed:
            record_run(record(name), run_dir(name))
            here[name] = True
        elif here[name] and record_dir:
            record_run(run_dir(name), record(name))
        elif record_dir:
            step = restore_parked(record(name), run_dir(name), config)
            if step is not None:
                print(f"{name}: resumes from its parked checkpoint at step {step}.")
        index[name] = {"steps": config["steps"], "status": "done" if here[name] else "todo"}
        if parent:
            index[name]["parent"] = parent
    return index


def select(all_points: list[tuple[str, dict, str | None]], only: list[str]) -> set[str]:
    """The points named in `only` and their decayed branches (all points when empty). An
    unknown name, or a branch without its constant-LR run, is an error."""
    names = [name for name, _, _ in all_points]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"--only names no point of this sweep: {unknown}; its points are "
                         f"{names}")
    chosen = set(only or names)
    orphans = sorted(n for n, _, p in all_points if n in chosen and p and p not in chosen)
    if orphans:
        raise ValueError(f"--only names decayed branches without their constant-LR run: "
                         f"{orphans}; name the run they branch off too")
    return chosen | {n for n, _, p in all_points if p in chosen}


def command(run_dir: str) -> list[str]:
    return [
        sys.executable,
        RUN,
        f"--config={FROM_JSON}:{os.path.join(run_dir, 'config.json')}",
        f"--cpu_devices={FLAGS.devices_per_run}",  # as local mode, also when run by hand
        f"--workdir={run_dir}",
    ]


def core_sets(workers: int, cpus_per_run: int) -> list[set[int]]:
    """Disjoint sets of `cpus_per_run` cores of this process's CPUs, one per worker."""
    cpus = sorted(os.sched_getaffinity(0))
    if workers * cpus_per_run > len(cpus):
        raise ValueError(
            f"--workers={workers} × --cpus_per_run={cpus_per_run} needs "
            f"{workers * cpus_per_run} cores; this process may use {len(cpus)}."
        )
    return [set(cpus[i * cpus_per_run : (i + 1) * cpus_per_run]) for i in range(workers)]


def _run_local(
    run_dir: str, free_cores: queue.Queue | None, stopping: threading.Event, running: set
):
    """The run's exit code; None if the sweep was stopped before it started. While it runs,
    its Popen is in `running`."""
    if stopping.is_set():
        return None
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={FLAGS.devices_per_run}",
    }
    cores = free_cores.get() if free_cores else None
    try:
        with open(os.path.join(run_dir, "log.txt"), "a") as log:
            run = subprocess.Popen(
                command(run_dir),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
            )
            running.add(run)
            if stopping.is_set():  # started as the sweep was stopped: the stop missed it
                run.terminate()
            try:
                return run.wait()
            finally:
                running.discard(run)
    finally:
        if cores:
            free_cores.put(cores)


def _write_batch_files(sweep_dir: str, phases: dict[str, list[str]]) -> None:
    """Per phase: `commands<phase>.txt` (one command per run still to run) and
    `slurm<phase>.sh` (a job array over it); and `submit.sh`, which submits each array after
    the previous one."""
    submit = ["#!/bin/bash", "set -e", "jid="]
    for phase, run_dirs in phases.items():
        if not run_dirs:  # nothing to run: no stale list of an earlier call either
            for stale in (f"commands{phase}.txt", f"slurm{phase}.sh"):
                if os.path.exists(os.path.join(sweep_dir, stale)):
                    os.remove(os.path.join(sweep_dir, stale))
            continue
        commands = os.path.join(sweep_dir, f"commands{phase}.txt")
        lines = [" ".join(command(d)) for d in run_dirs]
        atomic_write_text(commands, "\n".join(lines) + "\n")
        script = "\n".join(
            [
                "#!/bin/bash",
                f"#SBATCH --array=0-{len(run_dirs) - 1}",
                f"#SBATCH --job-name=scion-sweep{phase}",
                f"#SBATCH --output={sweep_dir}/slurm-%A_%a.out",
                "# One run per array task; rerun the array to resume unfinished runs.",
                f'CMD=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {commands})',
                "exec $CMD --distributed",
                "",
            ]
        )
        atomic_write_text(os.path.join(sweep_dir, f"slurm{phase}.sh"), script)
        after = '${jid:+--dependency=afterok:$jid}'
        submit.append(f"jid=$(sbatch --parsable {after} {sweep_dir}/slurm{phase}.sh)")
    atomic_write_text(os.path.join(sweep_dir, "submit.sh"), "\n".join(submit) + "\n")


def main(_):
    sweep_dir = os.path.abspath(FLAGS.sweep_dir)
    os.makedirs(os.path.join(sweep_dir, "runs"), exist_ok=True)
    run_dir = lambda name: os.path.join(sweep_dir, "runs", name)
    record = lambda name: os.path.join(FLAGS.record_dir, "runs", name)
    all_points = points(_CONFIG.value)
    chosen = select(all_points, FLAGS.only)
    index = prepare_runs(all_points, sweep_dir, FLAGS.record_dir)
    todo, children = [], {}
    for name, point in index.items():
        if "parent" in point:
            children.setdefault(point["parent"], [])
        if name in chosen and point["status"] == "todo":
            (children[point["parent"]] if "parent" in point else todo).append(name)
    save_index = lambda: atomic_write_text(
        os.path.join(sweep_dir, "index.json"), json.dumps(index, indent=1)
    )
    save_index()
    n_todo = len(todo) + sum(map(len, children.values()))
    n_done = sum(p["status"] == "done" for p in index.values())
    only = f" (--only: {len(chosen)} of them)" if FLAGS.only else ""
    print(f"{len(index)} points{only}, {n_done} finished, {n_todo} to run.")
    if FLAGS.mode != "local":
        phases = {"": todo, "_branches": [b for bs in children.values() for b in bs]}
        _write_batch_files(sweep_dir, {k: [run_dir(n) for n in v] for k, v in phases.items()})
        print(f"wrote the command lists, SLURM arrays and submit.sh in {sweep_dir}")
        return
    free_cores = None
    if FLAGS.cpus_per_run:
        free_cores = queue.Queue()
        for cores in core_sets(FLAGS.workers, FLAGS.cpus_per_run):
            free_cores.put(cores)
    failed, parked = [], []
    # SIGTERM (to the sweep or its whole process group): start nothing new, and pass it on
    # to the running runs.
    stopping, running = threading.Event(), set()

    def stop(*_):
        stopping.set()
        for run in list(running):
            run.terminate()

    signal.signal(signal.SIGTERM, stop)
    with (
        concurrent.futures.ThreadPoolExecutor(FLAGS.workers) as pool,
        tqdm(total=n_todo, unit="run", desc="sweep") as bar,
    ):
        launch = lambda name: pool.submit(_run_local, run_dir(name), free_cores, stopping, running)
        # A finished run's branches start now; the others' when it finishes.
        ready = todo + [b for p, bs in children.items() if index[p]["status"] == "done" for b in bs]
        pending = {launch(n): n for n in ready}
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when="FIRST_COMPLETED")
            for future in done:
                name = pending.pop(future)
                code = future.result()
                ok = code == 0 and is_finished(run_dir(name), index[name]["steps"])
                index[name]["status"] = "done" if ok else "failed"
                if ok and FLAGS.record_dir:
                    record_run(run_dir(name), record(name))
                branches = children.get(name, [])
                if ok:
                    pending.update({launch(b): b for b in branches})
                elif stopping.is_set() and code in STOPPED:
                    index[name]["status"] = "todo"
                    step = park_run(run_dir(name), record(name)) if FLAGS.record_dir else None
                    if step:
                        parked.append(f"{name} (step {step})")
                else:
                    failed.append(name)
                    for b in branches:  # never started: their constant-LR run failed
                        index[b]["status"] = "failed"
                    failed.extend(branches)
                    bar.update(len(branches))
                save_index()
                bar.update(1)
    if parked:
        print(f"parked {len(parked)} stopped runs in {FLAGS.record_dir}: {parked}")
    if failed:
        print(f"{len(failed)} runs failed (see their log.txt): {failed[:5]}")
        sys.exit(1)
    if stopping.is_set():
        sys.exit(143)


if __name__ == "__main__":
    app.run(main)

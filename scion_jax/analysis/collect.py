"""Read a sweep directory into one table: one row per run × horizon D = 2^k tokens.

PAPER.md §5: one long constant-LR run per (η, B) is evaluated at many horizons; the loss at
horizon D is the loss at the first logged step with tokens ≥ D, optionally averaged over a
small window of neighbouring logged points: here the points back to D·2^-w (a window of w in
log2 tokens, the same share of every horizon, and one that still exists at a run's last
step). The output norm ‖W_out‖_{RMS→∞} (§1, the x axis of Fig. 1a/2) is taken at the
nearest logged norm step at or after that step.

A sweep directory holds one run directory per point, each with `config.json` (the run's
config, flattened `optimizer.learning_rate` keys or nested as the trainer writes it) and
`metrics.jsonl` (one JSON object per logged step: `step`, `tokens`, `loss`, `lr`, and on some
steps `output_norm` and held-out losses: `eval_loss`, and any other `eval_<set>_loss`, e.g.
`eval_spread_loss`, each read like `eval_loss`). The table is a list of dict rows; it
round-trips through CSV with `write_csv` / `read_csv`. Only numpy and the standard library are used.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

Row = dict[str, Any]
Table = list[Row]

LR_KEY = "optimizer.learning_rate"
BATCH_KEY = "batch_size"
# The first columns of the CSV, in this order; every flattened config key follows, sorted.
CORE_COLUMNS = (
    "run", "log2_D", "D", "step", "tokens", "loss", "eval_loss", "eval_spread_loss", "output_norm",
    "log2_norm", "norm_step", "input_norm", "hidden_norm", "log2_lr", "log2_B",
)
# Held-out losses a run may log (`eval_loss`, `eval_spread_loss`, …): one column each.
EVAL_KEY = re.compile(r"eval(_\w+)?_loss")
# Mean norm of each other layer group, from the trainer's per-layer norm keys (Fig. 9).
GROUP_NORM_PREFIXES = {"input_norm": "l1_to_rms/", "hidden_norm": "rms_to_rms/"}


class SweepWarning(UserWarning):
    """A run directory that was skipped (unfinished, corrupt or incomplete)."""


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dotted keys (`optimizer.learning_rate`), as the trainer's config.json nests.

    Scalars (str, int, float, bool, None) are kept; lists become their JSON text.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


class RunError(ValueError):
    """Why a run directory cannot be used."""


def read_run(run_dir: str, *, allow_partial: bool = False) -> tuple[dict[str, Any], list[Row]]:
    """(flattened config, metric rows) of one run directory.

    Raises `RunError` when the run is unusable: a missing/unparsable file, a corrupt line, a
    torn (truncated) last line — the writer died mid-line, so the run did not finish —, or,
    unless `allow_partial`, a last logged step short of the config's `steps` or a last row
    marked `preempted`.
    """
    cfg_path = os.path.join(run_dir, "config.json")
    met_path = os.path.join(run_dir, "metrics.jsonl")
    for path in (cfg_path, met_path):
        if not os.path.isfile(path):
            raise RunError(f"no {os.path.basename(path)}")
    try:
        with open(cfg_path) as f:
            config = flatten(json.load(f))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise RunError(f"config.json is not a JSON object ({e})") from None
    with open(met_path, "rb") as f:
        raw = f.read()
    lines = raw.decode("utf-8", errors="replace").split("\n")
    rows: list[Row] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row or "tokens" not in row:
                raise ValueError("no step/tokens")
        except ValueError as e:
            where = "truncated last line" if i >= len(lines) - 2 else f"corrupt line {i + 1}"
            raise RunError(f"metrics.jsonl: {where} ({e})") from None
        rows.append(row)
    if not rows:
        raise RunError("metrics.jsonl is empty")
    rows.sort(key=lambda r: r["step"])
    if not allow_partial:
        if rows[-1].get("preempted"):
            raise RunError(f"preempted at step {rows[-1]['step']}")
        steps = config.get("steps")
        if isinstance(steps, (int, float)) and rows[-1]["step"] < steps:
            raise RunError(f"unfinished: last logged step {rows[-1]['step']} < steps={steps}")
    return config, rows


def _first_at_or_after(tokens: np.ndarray, target: float) -> int | None:
    i = int(np.searchsorted(tokens, target, side="left"))
    return i if i < len(tokens) else None


def _trailing_mean(
    tokens: np.ndarray, values: np.ndarray, i: int, d: float, window_log2: float
) -> float:
    """Mean of point i (the first at or after D = d) and the points before it with tokens
    ≥ D·2^-window_log2."""
    lo = int(np.searchsorted(tokens, d * 2.0**-window_log2, side="left"))
    return float(np.mean(values[min(lo, i) : i + 1]))


def _series(rows: list[Row], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, tokens, values) of the rows that log `key` with a number."""
    pts = [(r["step"], r["tokens"], r[key]) for r in rows
           if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    if not pts:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    a = np.asarray(pts, dtype=np.float64)
    return a[:, 0], a[:, 1], a[:, 2]


def _group_norm_series(rows: list[Row], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean of the norms whose key starts with `prefix`) of the rows logging any."""
    pts = []
    for r in rows:
        vals = [v for k, v in r.items() if k.startswith(prefix) and isinstance(v, (int, float))]
        if vals:
            pts.append((r["step"], float(np.mean(vals))))
    a = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def horizon_rows(
    config: dict[str, Any],
    rows: list[Row],
    *,
    horizons: Iterable[int] | None = None,
    window_log2: float = 0.0,
    max_overshoot: float | None = 1.5,
) -> Table:
    """The table rows of one run: one per horizon D = 2^k (PAPER.md §5).

    For each k: the first logged step with tokens ≥ D gives `loss` (the mean of it and the
    logged losses before it back to D·2^-window_log2), `eval_loss` and every other held-out
    loss the run logs (`EVAL_KEY`) likewise over their own eval points (`eval_loss` NaN if
    none), and
    `output_norm` (with `input_norm`, `hidden_norm`: the mean norm of those layer groups) at
    the first norm step at or after it (NaN if none). Horizons whose first
    logged tokens exceed `max_overshoot`·D (too coarse a log) are left out; `None` keeps all.
    `horizons` defaults to every integer k with 0 < 2^k ≤ the last logged tokens.
    """
    if not window_log2 >= 0:
        raise ValueError(f"window_log2 must be ≥ 0, got {window_log2}")
    steps, tokens, loss = _series(rows, "loss")
    if len(tokens) == 0:
        return []
    eval_keys = sorted({k for r in rows for k in r if EVAL_KEY.fullmatch(k)} | {"eval_loss"})
    evals = {key: _series(rows, key)[1:] for key in eval_keys}
    n_steps, n_tokens, norm = _series(rows, "output_norm")
    groups = {col: _group_norm_series(rows, prefix) for col, prefix in GROUP_NORM_PREFIXES.items()}
    if horizons is None:
        lo = math.ceil(math.log2(max(float(tokens[0]), 1.0)))
        hi = math.floor(math.log2(float(tokens[-1])))
        horizons = range(lo, hi + 1)
    lr, batch = config.get(LR_KEY), config.get(BATCH_KEY)
    base = {
        "log2_lr": math.log2(lr) if isinstance(lr, (int, float)) and lr > 0 else math.nan,
        "log2_B": math.log2(batch) if isinstance(batch, (int, float)) and batch > 0 else math.nan,
        **config,
    }
    out: Table = []
    for k in horizons:
        d = 2.0**k
        i = _first_at_or_after(tokens, d)
        if i is None or (max_overshoot is not None and tokens[i] > max_overshoot * d):
            continue
        row: Row = {"log2_D": int(k), "D": d, "step": int(steps[i]), "tokens": float(tokens[i]),
                    "loss": _trailing_mean(tokens, loss, i, d, window_log2), "eval_loss": math.nan,
                    "output_norm": math.nan, "log2_norm": math.nan, "norm_step": math.nan,
                    "input_norm": math.nan, "hidden_norm": math.nan}
        for key, (ev_tokens, ev_loss) in evals.items():
            j = _first_at_or_after(ev_tokens, d)
            if j is not None and (max_overshoot is None or ev_tokens[j] <= max_overshoot * d):
                row[key] = _trailing_mean(ev_tokens, ev_loss, j, d, window_log2)
        m = int(np.searchsorted(n_steps, steps[i], side="left"))
        if m < len(n_steps) and (max_overshoot is None or n_tokens[m] <= max_overshoot * d):
            row["output_norm"] = float(norm[m])
            row["norm_step"] = int(n_steps[m])
            if norm[m] > 0:
                row["log2_norm"] = math.log2(norm[m])
        for col, (g_steps, g_norm) in groups.items():
            j = int(np.searchsorted(g_steps, steps[i], side="left"))
            row[col] = float(g_norm[j]) if j < len(g_steps) and g_steps[j] == row["norm_step"] \
                else math.nan
        out.append({**row, **base})
    return out


def collect(
    sweep_dir: str,
    *,
    horizons: Iterable[int] | None = None,
    window_log2: float = 0.0,
    max_overshoot: float | None = 1.5,
    allow_partial: bool = False,
) -> Table:
    """Every usable run under `sweep_dir` → one table (rows sorted by run, then horizon).

    A run directory is any subdirectory (searched recursively, not below a run directory)
    holding `config.json` or `metrics.jsonl`; unusable runs (see `read_run`; a config without
    metrics is a run not yet started) are skipped with a `SweepWarning` naming the reason.
    """
    if not os.path.isdir(sweep_dir):
        raise FileNotFoundError(f"sweep directory {sweep_dir!r} does not exist")
    table: Table = []
    hz = None if horizons is None else list(horizons)
    for root, dirs, files in os.walk(sweep_dir):
        dirs.sort()
        if root == sweep_dir or not {"metrics.jsonl", "config.json"} & set(files):
            continue
        dirs[:] = []  # checkpoints/, tensorboard/ of a run hold no runs
        name = os.path.relpath(root, sweep_dir)
        try:
            config, rows = read_run(root, allow_partial=allow_partial)
        except RunError as e:
            warnings.warn(f"skipping run {name!r}: {e}", SweepWarning, stacklevel=2)
            continue
        for row in horizon_rows(config, rows, horizons=hz, window_log2=window_log2,
                                max_overshoot=max_overshoot):
            table.append({"run": name, **row})
    return table


def is_table_source(path: str) -> bool:
    """Whether an analysis source is a table.csv (`read_table`) rather than a sweep
    directory."""
    return path.endswith(".csv")


def run_identity(row: Row) -> tuple:
    """What a run is: its config, the row's columns other than the run name, CORE_COLUMNS
    and held-out losses (empty values left out, as a CSV round trip drops them)."""
    return tuple(sorted((k, v) for k, v in row.items() if k != "run" and k not in CORE_COLUMNS
                        and not EVAL_KEY.fullmatch(k) and v not in (None, "")))


def read_table(path: str, *, window_log2: float, allow_partial: bool = False) -> Table:
    """The rows of runs whose raw metrics are gone, from the `table.csv` an earlier analysis
    wrote (`experiments/plot.py`), checked against the `fits.json` written beside it.

    That analysis must have collected with this `window_log2` (a ValueError names both
    otherwise). Where it read one sweep directory, run names get that directory's name,
    `<sweep>/<run>`, as `plot.py` names the runs of several sources; otherwise they are
    kept. A run that stopped early (its last horizon below log2 of its steps · batch_size ·
    seq_len tokens) is left out with a `SweepWarning` unless `allow_partial`: its last
    row may lack the held-out loss or norm that a later evaluation would have given.
    """
    fits_path = os.path.join(os.path.dirname(os.path.abspath(path)), "fits.json")
    if not os.path.isfile(path) or not os.path.isfile(fits_path):
        raise FileNotFoundError(f"{path!r}: a table source needs the table.csv and the fits.json "
                                f"an analysis wrote beside it")
    with open(fits_path) as f:
        record = json.load(f)
    if record.get("window_log2") != window_log2:
        raise ValueError(f"{path!r} was collected with window_log2={record.get('window_log2')} "
                         f"(its fits.json), not the {window_log2} asked for")
    sources = record.get("sweep_dirs") or []
    prefix = (f"{os.path.basename(os.path.normpath(sources[0]))}/"
              if len(sources) == 1 and not is_table_source(sources[0]) else "")
    runs: dict[str, Table] = {}
    for i, row in enumerate(read_csv(path)):
        if "run" not in row or not isinstance(row.get("log2_D"), int):
            raise ValueError(f"{path!r} row {i + 2}: no run name or integer log2_D; not a "
                             f"table written by plot.py")
        runs.setdefault(f"{prefix}{row['run']}", []).append(row)
    table: Table = []
    for name, rows in runs.items():
        r, last = rows[0], max(x["log2_D"] for x in rows)
        total = r.get("steps", 0) * r.get(BATCH_KEY, 0) * r.get("seq_len", 0)
        if not allow_partial and total > 0 and last < math.floor(math.log2(total)):
            warnings.warn(f"skipping run {name!r} of {path!r}: unfinished (its last horizon "
                          f"is 2^{last}, its steps make {total} tokens)", SweepWarning,
                          stacklevel=2)
            continue
        table += [{**row, "run": name} for row in rows]
    return table


def columns(table: Sequence[Row]) -> list[str]:
    """CORE_COLUMNS present in the table, then every other key, sorted."""
    keys: set[str] = set()
    for row in table:
        keys.update(row)
    return [c for c in CORE_COLUMNS if c in keys] + sorted(keys - set(CORE_COLUMNS))


def column(table: Sequence[Row], key: str) -> np.ndarray:
    """One numeric column as float64 (missing or non-numeric values → NaN)."""
    def num(v: Any) -> float:
        if isinstance(v, bool):
            return float(v)
        return float(v) if isinstance(v, (int, float)) else math.nan
    return np.asarray([num(r.get(key)) for r in table], dtype=np.float64)


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` via a temp file in the same directory and `os.replace`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # round-trips exactly; nan/inf as 'nan'/'inf'
    return str(v)


def to_csv_text(table: Sequence[Row]) -> str:
    """The table as CSV text (header = `columns(table)`; missing cells empty)."""
    import io

    buf = io.StringIO()
    cols = columns(table)
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in table:
        writer.writerow([_cell(row.get(c)) for c in cols])
    return buf.getvalue()


def write_csv(table: Sequence[Row], path: str) -> None:
    """Write the table to `path` atomically (a kill never leaves a half-written file)."""
    atomic_write_text(path, to_csv_text(table))


def _parse(s: str) -> Any:
    if s == "":
        return None
    if s in ("True", "False"):
        return s == "True"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def read_csv(path: str) -> Table:
    """A table written by `write_csv` (numbers and booleans parsed back, the run name kept
    as text, empty cells → absent)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [{k: v for k, v in ((k, s if k == "run" else _parse(s)) for k, s in r.items())
                 if v not in (None, "")} for r in reader]

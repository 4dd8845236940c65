"""The plateau study (issue 25): does the optimal output norm stop rising by 2^25 tokens?

`cpu_horizon` (to 2^23) saw the optimal log2 norm at B*(D) still rising, by ≈ 0.3 per
doubling and slowing. 2^25 tokens is the first horizon in the paper's regime (≥ 4k steps at
B*) and the most the "english" corpus gives without repeating data (`num_epochs = 1`).

Every run: `cpu_study_config()` on "english" to 2^25 tokens, constant LR. Two held-out sets
evaluated every 2^19 tokens: the old one (the first 256 held-out sequences: one play, for
continuity with `cpu_horizon`) and a spread one of 512 sequences evenly spaced over the whole
held-out split (every held-out play, book, dictionary range and WordNet file in proportion:
`eval_spread_loss`). Norms are logged at evaluations only (the norm log's SVDs cost ≈ 12% of
the d 64 step when logged every 8 steps); the training loss every 8 steps, read per horizon
over a trailing window (no batch is ever repeated, so it is an unbiased estimate too).

The η grid (2^0.5 apart, ≥ 4 per B) is placed from `cpu_horizon`'s per-B optima at 2^23
(B 16: 2^-2.5, B 32: 2^-2 … 2^-1.5 flat, B 64: 2^-2; larger B want larger η, α ≈ 0.3 per
doubling of B) moved down by the per-B η* slope (≈ −0.1 … −0.3 per doubling of D). Points are
in priority order: the essentials (B 32 / 64 / 128, each B's two middle η first), then B 16;
the second seed is `cpu_plateau_seeds.py`, placed once these optima are read. Where an
optimum lands on a grid edge, add that B's next η to `GRID` (finished runs keep their names):
`edge_extensions` names them from the record, by the rule in its docstring
(`python experiments/configs/sweeps/cpu_plateau.py [record_dir]` prints them).
"""

import math
import os
import sys
import warnings

import ml_collections

from scion_jax.analysis import transfer
from scion_jax.analysis.collect import BATCH_KEY, SweepWarning, collect
from scion_jax.train.config import cpu_study_config

# log2 η per B, the two middle values first (a partial sweep brackets each optimum soonest).
GRID = {
    32: (-2.5, -2.0, -3.0, -1.5),
    64: (-2.0, -1.5, -2.5, -1.0, -0.5, 0.0),
    128: (-2.0, -1.5, -2.5, -1.0),
    16: (-2.5, -3.0, -2.0, -1.5),
}
MAX_TOKENS = 2**25
EVAL_TOKENS = 2**19
SEQ_LEN = cpu_study_config().seq_len
# How REPORT.md's decision rule reads the study: held-out loss on the spread set over the
# trailing 2^-0.25 window, per-B parabolas on the k = 7 runs nearest the lowest loss.
LOSS_KEY = "eval_spread_loss"
WINDOW_LOG2 = 0.25
K = 7
VERDICT_HORIZONS = 3  # the slope is read over the three longest horizons
RECORD = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                      "results", "cpu_plateau", "sweeps", "cpu_plateau"))


def point(b: int, log2_lr: float) -> tuple:
    """(B, η, eval_every, norm_every): evaluated and norms logged every EVAL_TOKENS tokens."""
    every = EVAL_TOKENS // (b * SEQ_LEN)
    return b, 2.0**log2_lr, every, every


def points_by_priority(grid: dict[int, tuple]) -> tuple:
    """Ring by ring: every B's first η (in `grid`'s B order), then every B's second, …;
    the essential B (all but the last) before the last B's points."""
    *essential, last = grid
    rings = max(len(v) for v in grid.values())
    out = [point(b, grid[b][i]) for i in range(rings) for b in essential if i < len(grid[b])]
    return tuple(out + [point(last, lr) for lr in grid[last]])


def seed0_rows(record_dir: str) -> list[dict]:
    """Seed 0's rows of the record (every horizon of every run), read as the rule reads them."""
    with warnings.catch_warnings():  # parked runs lie beside the finished
        warnings.simplefilter("ignore", SweepWarning)
        table = collect(record_dir, window_log2=WINDOW_LOG2)
    return [r for r in table if r.get("seed", 0) == 0 and math.isfinite(r.get(LOSS_KEY, math.nan))]


def finished_batches(rows: list[dict], grid: dict[int, tuple]) -> set[int]:
    """The B of `grid` whose every η has reached MAX_TOKENS in `rows`."""
    done = {(r[BATCH_KEY], round(r["log2_lr"], 6)) for r in rows
            if r["log2_D"] == math.log2(MAX_TOKENS)}
    return {b for b in grid if all((b, lr) in done for lr in grid[b])}


def edge_extensions(record_dir: str, grid: dict[int, tuple]) -> tuple[tuple[int, float], ...]:
    """((B, log2 η), ...) to add to `grid`: for each B whose runs have all finished, where its
    lowest measured loss at one of the VERDICT_HORIZONS longest horizons is at the smallest
    (largest) η of its grid (`Optimum.eta_edge`: such an optimum is left out of the verdict),
    the η half a step below (above) that edge. Ascending; empty when no optimum is at an edge."""
    rows = seed0_rows(record_dir)
    done = finished_batches(rows, grid)
    rows = [r for r in rows if r[BATCH_KEY] in done]
    longest = sorted({r["log2_D"] for r in rows})[-VERDICT_HORIZONS:]
    beyond = {"low": lambda b: min(grid[b]) - 0.5, "high": lambda b: max(grid[b]) + 0.5}
    return tuple(sorted({(int(o.batch_size), beyond[o.eta_edge](int(o.batch_size)))
                         for o in transfer.primary_optima(rows, k=K, loss_key=LOSS_KEY)
                         if o.log2_D in longest and o.eta_edge}))


def base():
    c = cpu_study_config()
    c.data.source = "english"
    c.data.num_epochs = 1
    c.eval_sequences = 256
    c.eval_spread_sequences = 512
    c.checkpoint_every = 512
    return c


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = base()
    sweep.grid = (
        (("batch_size", "optimizer.learning_rate", "eval_every", "norm_every"),
         points_by_priority(GRID)),
    )
    sweep.max_tokens = MAX_TOKENS
    return sweep


if __name__ == "__main__":
    print(edge_extensions(sys.argv[1] if len(sys.argv) > 1 else RECORD, GRID))

"""Second seed for the plateau study (issue 25): the best two η of the two B nearest B*(2^25).

Placed by a rule, from the recorded seed-0 grid (`cpu_plateau.py`'s record,
`experiments/results/cpu_plateau/sweeps/cpu_plateau`, or the record directory given as the
config argument: `--config=.../cpu_plateau_seeds.py:<record_dir>`):
- B*(2^25): the continuous B* (`transfer.b_star`: vertex of the parabola in log2 B through
  the per-B loss optima, held-out loss `eval_spread_loss` over the trailing 2^-0.25 window,
  k = 7) of every B of `GRID` whose runs have all finished: the essential B (all but its last,
  16) and B 16 once its runs are in (session 14 ran them before the seeds: the essentials'
  lowest loss at 2^24 and 2^25 was at B 32, their smallest B, so B* needs B 16 to be
  bracketed); the discrete B* where the parabola has no vertex;
- the two B of `GRID` nearest it in log2 B (the smaller on a tie);
- per B, the two η of lowest measured loss at 2^25 among its finished runs (its grid's first
  two, the middle ones, if it has none finished).
Every essential run must have finished: placing on a partial grid would move the points as
runs finish (a ValueError names the missing runs). Seed 1: new initial weights and data order.
"""

import importlib.util
import math
import os

import ml_collections

from scion_jax.analysis import transfer
from scion_jax.analysis.collect import BATCH_KEY


def _plateau():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_plateau.py")
    spec = importlib.util.spec_from_file_location("cpu_plateau", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_end(record_dir: str, grid: dict[int, tuple]) -> tuple[list[dict], float]:
    """(the seed-0 rows at 2^25 tokens, log2 B*(2^25)) from the record, by the rule above."""
    plateau = _plateau()
    *essential, _ = grid
    log2_d = math.log2(plateau.MAX_TOKENS)
    final = [r for r in plateau.seed0_rows(record_dir) if r["log2_D"] == log2_d]
    done = {(r[BATCH_KEY], round(r["log2_lr"], 6)) for r in final}
    missing = [(b, lr) for b in essential for lr in grid[b] if (b, lr) not in done]
    if missing:
        raise ValueError(f"{record_dir!r}: the seed-0 grid is unfinished at 2^{log2_d:g} "
                         f"tokens; missing (B, log2 η): {missing}")
    complete = plateau.finished_batches(final, grid)
    rows = [r for r in final if r[BATCH_KEY] in complete]
    row = transfer.b_star(transfer.primary_optima(rows, k=plateau.K, loss_key=plateau.LOSS_KEY))
    centre = row["log2_b_star"] if math.isfinite(row["log2_b_star"]) else math.log2(row["b_star"])
    if not math.isfinite(centre):
        raise ValueError(f"{record_dir!r}: no B*(2^{log2_d:g}) ({row['b_edge']})")
    return final, centre


def nearest(grid: dict[int, tuple], log2_b: float, n: int) -> list[int]:
    """The n batch sizes of `grid` nearest log2_b in log2 B (the smaller on a tie), ascending."""
    return sorted(sorted(grid, key=lambda b: (abs(math.log2(b) - log2_b), b))[:n])


def best_lrs(final: list[dict], b: int, n: int) -> list[float]:
    """The n log2 η of lowest measured loss among B's finished runs, best first."""
    loss_key = _plateau().LOSS_KEY
    runs = sorted((r for r in final if r[BATCH_KEY] == b), key=lambda r: r[loss_key])
    return [round(r["log2_lr"], 6) for r in runs[:n]]


def place(record_dir: str, grid: dict[int, tuple]) -> tuple[tuple[int, float], ...]:
    """((B, log2 η), ...) of the second seed, by the rule above, from the seed-0 record."""
    final, centre = read_end(record_dir, grid)
    return tuple((b, lr) for b in nearest(grid, centre, 2)
                 for lr in best_lrs(final, b, 2) or grid[b][:2])


def get_config(record_dir: str | None = None):
    plateau = _plateau()
    sweep = ml_collections.ConfigDict()
    sweep.base = plateau.base()
    sweep.base.seed = 1
    points = place(record_dir or plateau.RECORD, plateau.GRID)
    sweep.grid = (
        (("batch_size", "optimizer.learning_rate", "eval_every", "norm_every"),
         tuple(plateau.point(b, lr) for b, lr in points)),
    )
    sweep.max_tokens = plateau.MAX_TOKENS
    return sweep

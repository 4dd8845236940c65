"""Width check of the plateau study (issue 25): d 128 (2 heads of 64) at B*(2^25), 4 η.

The runs of `cpu_plateau.py` (english corpus, one epoch, to 2^25 tokens, both held-out sets
every 2^19 tokens, norms at evaluations) at twice the width, placed by a rule from the
recorded seed-0 grid (the record directory may be given as the config argument, as for
`cpu_plateau_seeds.py`):
- B: the grid B nearest the continuous B*(2^25) (`cpu_plateau_seeds.read_end`: the same
  B* the second seed is placed at);
- η: d 64's best η at that B (lowest measured `eval_spread_loss` at 2^25), half a step
  below it, and half and one step above it: `cpu_horizon_width.py` found d 128's optimum
  half a step above d 64's grid centre, so the grid leans up.
`horizon_study.py` compares d 128's optimal output norm with d 64's at the same B and
horizon (the paper's Fig. 2b claim: the optimum sits at the same norm whatever the width).
"""

import importlib.util
import os

import ml_collections

ETA_STEPS = (0.0, 0.5, -0.5, 1.0)  # log2 η from d 64's best at B, nearest first


def _sibling(name: str):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def place(record_dir: str, grid: dict[int, tuple]) -> tuple[tuple[int, float], ...]:
    """((B, log2 η), ...) of the width check, by the rule above, from the seed-0 record."""
    seeds = _sibling("cpu_plateau_seeds")
    final, centre = seeds.read_end(record_dir, grid)
    (b,) = seeds.nearest(grid, centre, 1)
    (best,) = seeds.best_lrs(final, b, 1) or grid[b][:1]
    return tuple((b, best + step) for step in ETA_STEPS)


def get_config(record_dir: str | None = None):
    plateau = _sibling("cpu_plateau")
    sweep = ml_collections.ConfigDict()
    sweep.base = plateau.base()
    sweep.base.model.update(d_model=128, n_heads=2)
    points = place(record_dir or plateau.RECORD, plateau.GRID)
    sweep.grid = (
        (("batch_size", "optimizer.learning_rate", "eval_every", "norm_every"),
         tuple(plateau.point(b, lr) for b, lr in points)),
    )
    sweep.max_tokens = plateau.MAX_TOKENS
    return sweep

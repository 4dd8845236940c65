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
optimum lands on a grid edge, add that B's next η to `GRID`: finished runs keep their names.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config

# log2 η per B, the two middle values first (a partial sweep brackets each optimum soonest).
GRID = {
    32: (-2.5, -2.0, -3.0, -1.5),
    64: (-2.0, -1.5, -2.5, -1.0),
    128: (-2.0, -1.5, -2.5, -1.0),
    16: (-2.5, -3.0, -2.0),
}
MAX_TOKENS = 2**25
EVAL_TOKENS = 2**19
SEQ_LEN = cpu_study_config().seq_len


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

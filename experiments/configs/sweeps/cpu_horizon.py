"""Long-horizon CPU study (issue 14): does the optimal output norm stop moving with D?

The η × B study found the optimal norm rising with D up to 2^20 and first levelling off at
2^21, where B* moves 8 → 16. This sweep goes 4× further, on text that is never repeated:
`cpu_study_config()` (d 64, 4 layers, context 128, byte-level, Scion 1 : 1/8 : 1, constant
LR) on the ≈ 60 MB "english" corpus (`make corpus`) with ``data.num_epochs = 1`` (a run
that would repeat data fails before training), every run to 2^23 tokens, horizons
D = 2^17 … 2^23 read off each run. One held-out set of 256 sequences for every B, evaluated
at every 2^17 tokens (so at every horizon): the optima are fitted to the held-out loss
(`horizon_study.py --loss=eval_loss`), because on this mixed corpus the training loss of a
batch moves with the kind of text in it (scripture, plays, dictionary entries) by more than
the horizons differ.

The η grid (2^0.5 apart) is centred per B on the expected optimum near 2^22: cpu_long's
η* at 2^21 was 2^-2 … 2^-2.5 for every B, moving as D^-0.26 (REPORT.md 5b), and larger B
want larger η (5a). Points run nearest-the-centre first, every B in turn, so a partial sweep
already brackets each B's optimum. Where an optimum lands on a grid edge, widen that B's grid
(raise HALF_WIDTH, or move its CENTRE): finished runs keep their names and are skipped.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config

# log2 η at the centre of each B's grid, and how many 2^0.5 steps the grid reaches each side.
CENTRE = {8: -2.5, 16: -2.5, 32: -2.5, 64: -2.0}
HALF_WIDTH = 3


EVAL_TOKENS = 2**17
SEQ_LEN = cpu_study_config().seq_len


def point(b: int, log2_lr: float) -> tuple:
    """(B, η, eval_every): batch B at η = 2^log2_lr, evaluated every EVAL_TOKENS tokens."""
    return b, 2.0**log2_lr, EVAL_TOKENS // (b * SEQ_LEN)


def points_by_priority(centre: dict[int, float], half_width: int) -> tuple:
    """`point`s: every B's centre, then ±1 step for every B, then ±2, …"""
    out = []
    for ring in range(half_width + 1):
        for b, c in centre.items():
            for offset in sorted({-ring, ring}):
                out.append(point(b, c + offset / 2))
    return tuple(out)


def base():
    c = cpu_study_config()
    c.data.source = "english"
    c.data.num_epochs = 1
    c.eval_sequences = 256
    c.checkpoint_every = 1024
    return c


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = base()
    sweep.grid = (
        (("batch_size", "optimizer.learning_rate", "eval_every"),
         points_by_priority(CENTRE, HALF_WIDTH)),
    )
    sweep.max_tokens = 2**23
    return sweep

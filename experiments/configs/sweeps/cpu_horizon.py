"""Long-horizon CPU study (issue 14): does the optimal output norm stop moving with D?

The η × B study found the optimal norm rising with D up to 2^20 and first levelling off at
2^21, where B* moves 8 → 16. This sweep goes 4× further, on text that is never repeated:
`cpu_study_config()` (d 64, 4 layers, context 128, byte-level, Scion 1 : 1/8 : 1, constant
LR) on the ≈ 60 MB "english" corpus (`make corpus`) with ``data.num_epochs = 1`` (a run
that would repeat data fails before training), every run to 2^23 tokens, horizons
D = 2^17 … 2^23 read off each run. B ∈ {8, 16, 32, 64} × η = 2^-4.5 … 2^-1.5 on a 2^0.5
grid: the cpu_long optima (η* = 2^-2.5 … 2^-2 at D = 2^19 … 2^21 for every B, moving
down as D^-0.26) sit inside it with a point to spare at both ends at 2^23.
One held-out set of 256 sequences for every B.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.data.source = "english"
    sweep.base.data.num_epochs = 1
    sweep.base.eval_sequences = 256
    sweep.base.eval_every = 512
    sweep.base.checkpoint_every = 1024
    sweep.grid = (
        ("batch_size", (8, 16, 32, 64)),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-9, -2))),
    )
    sweep.max_tokens = 2**23
    return sweep

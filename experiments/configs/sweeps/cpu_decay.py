"""CPU decayed-variant study (PAPER.md §5, §6.7, Fig. 8): a final 25% linear LR decay.

`cpu_study_config()` at B = 16; each constant-LR run also branches at 75% of D = 2^17,
2^18, 2^19 tokens into a run that decays η linearly to 0 (`decay_horizons`). The
constant-LR runs repeat cpu_lr_batch's B = 16 points (same seed: identical runs).
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.batch_size = 16
    sweep.grid = (
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-7, 1))),  # 2^-3.5…2^0
    )
    sweep.max_tokens = 2**19
    sweep.decay_horizons = (17, 18, 19)
    return sweep

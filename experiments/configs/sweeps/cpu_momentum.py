"""CPU momentum study (PAPER.md §6.7, Fig. 8): does momentum 0.1 flatten the B dependence?

`cpu_study_config()` with Scion momentum 0.1 (m ← 0.9·m + 0.1·g) at B ∈ {8, 16, 32};
compare with cpu_lr_batch (no momentum) at the same (η, B).
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.optimizer.momentum = 0.1
    sweep.grid = (
        ("batch_size", (8, 16, 32)),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-9, 1))),  # 2^-4.5…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

"""CPU weight-decay study (PAPER.md §6.7, Fig. 9): does λ = 0.1 drive the norms to 1/λ = 10?

`cpu_study_config()` at B = 16 with decoupled weight decay λ = 0.1 (W ← W − ηs(u + λW),
each layer at its own LR s·η, so every layer's norm tends to ρ/λ = 10).
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.batch_size = 16
    sweep.base.optimizer.weight_decay = 0.1
    sweep.grid = (
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-7, 1))),  # 2^-3.5…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

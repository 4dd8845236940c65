"""B = 4 for the CPU η × B study: is B* = 8 at D ≤ 2^19 only because 8 was the smallest B?

`cpu_study_config()` at B = 4, η = 2^-4 … 2^0 (2^0.5; cpu_lr_batch's optima at B 8 lie at
2^-2 … 2^-0.5), to 2^19 tokens. Analyse together with cpu_lr_batch (same setup).
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.grid = (
        ("batch_size", (4,)),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-8, 1))),  # 2^-4…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

"""CPU norm-transfer study (PAPER.md §5–6 at CPU scale): η × B grid, byte-level Shakespeare.

`cpu_study_config()`: d 64, 4 layers, context 128, Scion at the paper's group ratio
1 : 1/8 : 1, no momentum, constant LR; one run per (η, B) up to 2^19 tokens, horizons
D = 2^k read off each run.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.grid = (
        ("batch_size", (8, 16, 32, 64)),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-16, 1))),  # 2^-8…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

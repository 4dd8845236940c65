"""CPU depth study (PAPER.md §6.3, Fig. 2b): does the optimal output norm transfer across depth?

`cpu_study_config()` at B = 16 with 2 and 8 layers (4 layers is in cpu_lr_batch); no
depth-µP scaling, only the residual projections' 1/√(2L) init (PAPER.md §4).
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.batch_size = 16
    sweep.grid = (
        ("model.n_layers", (2, 8)),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-8, 1))),  # 2^-4…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

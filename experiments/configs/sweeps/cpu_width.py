"""CPU width study (PAPER.md §6.3, Fig. 2b): does the optimal output norm transfer across width?

`cpu_study_config()` at B = 16 with d ∈ {128, 256} (head_dim 64: 2 and 4 heads); d = 64
is in cpu_lr_batch. Analyse them together with `experiments/plot.py`.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.batch_size = 16
    sweep.grid = (
        (("model.d_model", "model.n_heads"), ((128, 2), (256, 4))),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-7, 1))),  # 2^-3.5…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

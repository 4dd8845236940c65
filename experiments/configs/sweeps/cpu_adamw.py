"""CPU AdamW study (PAPER.md §6.8, v2): does Adam also transfer the optimal output norm?

`cpu_study_config()` with AdamW (β = (0.9, 0.95), no weight decay, one LR for every
group) at B ∈ {8, 16, 32}; the output norm ‖W_out‖_{RMS→∞} is logged as for Scion.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.optimizer.name = "adamw"
    sweep.base.optimizer.lr_scales.hidden = 1.0
    sweep.grid = (
        ("batch_size", (8, 16, 32)),
        ("optimizer.learning_rate", tuple(2.0**k for k in range(-10, -2))),  # 2^-10…2^-3
    )
    sweep.max_tokens = 2**19
    return sweep

"""CPU per-group LR study (PAPER.md §6.6, Fig. 4): is input : hidden : output = 1 : 1/8 : 1
among the best?

`cpu_study_config()` at B = 16 up to 2^18 tokens; seven (input, hidden, output) LR-scale
configurations, each over η = 2^-4 … 2^0 (2^1 apart). Fig. 4 ranks each configuration's
best loss over η at every horizon D.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config

SCALES = (
    (1.0, 1 / 8, 1.0),  # the paper's choice
    (1.0, 1.0, 1.0),
    (1.0, 1 / 4, 1.0),
    (1.0, 1 / 16, 1.0),
    (1 / 4, 1 / 8, 1.0),
    (1.0, 1 / 8, 1 / 4),
    (4.0, 1 / 8, 1.0),
)


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.batch_size = 16
    keys = tuple(f"optimizer.lr_scales.{g}" for g in ("input", "hidden", "output"))
    sweep.grid = (
        (keys, SCALES),
        ("optimizer.learning_rate", tuple(2.0**k for k in range(-4, 1))),  # 2^-4…2^0
    )
    sweep.max_tokens = 2**18
    return sweep

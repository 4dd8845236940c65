"""CPU norm-transfer study (PAPER.md §5–6 at CPU scale): η × B grid, byte-level Shakespeare.

d 64, 4 layers, context 128, Scion at the paper's group ratio 1 : 1/8 : 1, no momentum,
constant LR; one run per (η, B) up to 2^19 tokens (B = 64 and the width/depth
grids are for a longer session), horizons D = 2^k read off each run.
"""

import ml_collections

from scion_jax.train.config import base_config


def get_config():
    base = base_config()
    base.seq_len = 128
    base.model.update(d_model=64, n_layers=4, n_heads=1, vocab_size=256)
    base.optimizer.lr_scales.hidden = 1 / 8
    base.log_every, base.norm_every, base.eval_every, base.checkpoint_every = 8, 8, 64, 256
    base.eval_batches = 4
    sweep = ml_collections.ConfigDict()
    sweep.base = base
    sweep.grid = (
        ("batch_size", (8, 16, 32)),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-16, 1))),  # 2^-8…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

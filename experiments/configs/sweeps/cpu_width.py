"""CPU width study (PAPER.md §6.3, Fig. 2b): does the optimal output norm transfer across width?

Same setup as `cpu_lr_batch.py` (4 layers, context 128, byte Shakespeare, Scion 1 : 1/8 : 1)
at B = 16, with d ∈ {128, 256} (head_dim 64: 2 and 4 heads); d = 64 is in cpu_lr_batch.
Analyse both together: `python experiments/plot.py --sweep_dir=workdirs/sweeps ...`.
"""

import ml_collections

from scion_jax.train.config import base_config


def get_config():
    base = base_config()
    base.seq_len, base.batch_size = 128, 16
    base.model.update(n_layers=4, vocab_size=256)
    base.optimizer.lr_scales.hidden = 1 / 8
    base.log_every, base.norm_every, base.eval_every, base.checkpoint_every = 8, 8, 64, 256
    base.eval_batches = 4
    sweep = ml_collections.ConfigDict()
    sweep.base = base
    sweep.grid = (
        (("model.d_model", "model.n_heads"), ((128, 2), (256, 4))),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-7, 1))),  # 2^-3.5…2^0
    )
    sweep.max_tokens = 2**19
    return sweep

"""The default of `make run`: a few minutes on a 2-core CPU, visibly learning.

A norm-everywhere Llama (d 128, 4 layers, 2 heads) on Shakespeare bytes, trained with
Scion at the paper's per-group LR ratio input : hidden : output = 1 : 1/8 : 1.
"""

from scion_jax.train.config import base_config


def get_config():
    c = base_config()
    c.steps = 300
    c.batch_size = 16
    c.seq_len = 256
    c.model.update(d_model=128, n_layers=4, n_heads=2, vocab_size=256)
    c.optimizer.learning_rate = 2.0**-5
    c.optimizer.lr_scales.hidden = 1 / 8
    c.log_every, c.norm_every, c.eval_every, c.checkpoint_every = 10, 16, 50, 100
    return c

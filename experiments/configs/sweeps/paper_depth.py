"""Depth transfer at paper scale (PAPER.md §6.3, Fig. 2b), for GPU/TPU pods.

    python experiments/sweep.py --config=experiments/configs/sweeps/paper_depth.py:/data/nemotron \
        --sweep_dir=/shared/sweeps/paper_depth --mode=slurm

The proxy with 32 layers (91M) and 128 layers (168M), no depth-µP (only the residual
projections' 1/√(2L) init); B = 64…1024, η = 2^-10…2^0 in 2^1 steps, to 2^35 tokens:
110 runs. Layers are scanned (`model.scan_layers`) to keep compile time flat in depth.
"""

import ml_collections

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    sweep = ml_collections.ConfigDict()
    sweep.base = paper_config("proxy_69m", data_source)
    sweep.base.optimizer.lr_scales.hidden = 1 / 8
    sweep.base.model.scan_layers = True
    sweep.grid = (
        ("model.n_layers", (32, 128)),
        ("batch_size", tuple(2**k for k in range(6, 11))),
        ("optimizer.learning_rate", tuple(2.0**k for k in range(-10, 1))),
    )
    sweep.max_tokens = 2**35
    sweep.decay_horizons = ()
    return sweep

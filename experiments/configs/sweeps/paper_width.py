"""Width transfer at paper scale (PAPER.md §6.3, Fig. 2b), for GPU/TPU pods.

    python experiments/sweep.py --config=experiments/configs/sweeps/paper_width.py:/data/nemotron \
        --sweep_dir=/shared/sweeps/paper_width --mode=slurm

The proxy with d 1024 (314M, 16 heads) and d 3072 (1.3B, 48 heads), head_dim 64 and SwiGLU
8/3·d (`mlp_hidden` 0); B = 64…1024, η = 2^-10…2^0 in 2^1 steps (the paper's grid for
scaled models), to 2^35 tokens: 2 × 5 × 11 = 110 runs. Analyse with paper_proxy's d 256
runs (plot.py takes both sweep dirs).
"""

import ml_collections

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    sweep = ml_collections.ConfigDict()
    sweep.base = paper_config("proxy_69m", data_source)
    sweep.base.optimizer.lr_scales.hidden = 1 / 8
    sweep.grid = (
        (
            ("model.d_model", "model.n_heads", "model.mlp_hidden"),
            ((1024, 16, 0), (3072, 48, 0)),
        ),
        ("batch_size", tuple(2**k for k in range(6, 11))),
        ("optimizer.learning_rate", tuple(2.0**k for k in range(-10, 1))),
    )
    sweep.max_tokens = 2**35
    sweep.decay_horizons = ()
    return sweep

"""The paper's η × B sweep on the 69M proxy (PAPER.md §5), for GPU/TPU pods.

    python experiments/sweep.py --config=experiments/configs/sweeps/paper_proxy.py:/data/nemotron \
        --sweep_dir=/shared/sweeps/paper_proxy --mode=slurm    # then: bash .../submit.sh

proxy_69m (context 4096, bf16, Scion 1 : 1/8 : 1, no momentum, constant LR), B = 32…2048
sequences, η = 2^-10…2^0 in 2^0.5 steps (brackets the paper's η* law over D = 2^29…2^37),
one run per (η, B) to 2^37 tokens: 147 runs. Add the decayed variant with e.g.
`--config.decay_horizons='(31, 33, 35)'`. The argument is a directory made by
`python -m scion_jax.data.prepare` (e.g. Nemotron-CC with a 128k tokenizer).
"""

import ml_collections

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    sweep = ml_collections.ConfigDict()
    sweep.base = paper_config("proxy_69m", data_source)
    sweep.base.optimizer.lr_scales.hidden = 1 / 8
    sweep.grid = (
        ("batch_size", tuple(2**k for k in range(5, 12))),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-20, 1))),
    )
    sweep.max_tokens = 2**37
    sweep.decay_horizons = ()
    return sweep

"""CPU study at a 4× longer horizon (to 2^21 tokens): does B* grow with D (PAPER.md §6.5)?

At D ≤ 2^19 the η × B study finds B* = 8 (its smallest B) at every horizon; B* ∝ D^0.45 says
it should move up with D. `cpu_study_config()`, B ∈ {8, 16, 32, 64}, η = 2^-4 … 2^-1.5
(around the optimum, which moves down with D), one run per (η, B) to 2^21 tokens. Every run
evaluates the same 256 held-out sequences, so the held-out loss compares batch sizes fairly.
"""

import ml_collections

from scion_jax.train.config import cpu_study_config


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = cpu_study_config()
    sweep.base.checkpoint_every = 512
    sweep.base.eval_sequences = 256  # the same held-out set for every B
    sweep.grid = (
        ("batch_size", (8, 16, 32, 64)),
        ("optimizer.learning_rate", tuple(2.0 ** (k / 2) for k in range(-8, -2))),  # 2^-4…2^-1.5
    )
    sweep.max_tokens = 2**21
    return sweep

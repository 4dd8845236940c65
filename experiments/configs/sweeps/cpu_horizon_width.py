"""Width check of the long-horizon study (issue 14): d 128 (2 heads of 64) at one B.

The same runs as `cpu_horizon.py` (english corpus, one epoch, held-out loss every 2^17
tokens, to 2^23 tokens) at twice the width, for one batch size B: η on the same 2^0.5 grid,
2 steps each side of CENTRE_SHIFT above where that grid is centred for B. The shift was 0
until the first four runs (2^-3 … 2^-1.5) showed the held-out loss still falling at 2^-1.5
at 2^21 (2.151, 2.120, 2.110, 2.109 over 2^-3 … 2^-1.5, 2026-12-02): the grid moved half a
step up, adding 2^-1 (the run at 2^-3.5, 64 steps in, was stopped and is not in the grid).
`horizon_study.py` compares the optimal output norm of d 128 with d 64's at the same B for
every horizon D ≥ 2^22 (the paper's Fig. 2b claim: the optimum sits at the same norm
whatever the width). B is the d 64
study's B* at 2^22–2^23; set it from the measured optimum before this runs. Set to 32 on
2026-12-02 from the partial grid (3 η per B): B* = 16 at 2^22 and 32 at 2^23, whose held-out
losses at 2^23 differ by 0.005; B 32 also runs faster per token. Norms are logged at every
evaluation, as in `cpu_horizon_seeds.py`.
"""

import importlib.util
import os

import ml_collections

BATCH_SIZE = 32
HALF_WIDTH = 2
CENTRE_SHIFT = 0.5  # in log2 η


def _horizon():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_horizon.py")
    spec = importlib.util.spec_from_file_location("cpu_horizon", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config():
    horizon = _horizon()
    sweep = ml_collections.ConfigDict()
    sweep.base = horizon.base()
    sweep.base.model.update(d_model=128, n_heads=2)
    centre = {BATCH_SIZE: horizon.CENTRE[BATCH_SIZE] + CENTRE_SHIFT}
    sweep.grid = (
        (("batch_size", "optimizer.learning_rate", "eval_every", "norm_every"),
         tuple((*point, point[2]) for point in horizon.points_by_priority(centre, HALF_WIDTH))),
    )
    sweep.max_tokens = 2**23
    return sweep

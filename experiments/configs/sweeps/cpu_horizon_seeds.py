"""Second seed for the long-horizon study (issue 14): the runs nearest each B's optimum.

`cpu_horizon.py`'s grid centre and its two neighbours (2^±0.5) for every B, with seed 1 (new
initial weights; the data order follows the seed too), to 2^23 tokens. The analysis
(`experiments/horizon_study.py`) refits every horizon's optimum with seed 1's runs in place of
seed 0's at these points: the spread is the optimal norm's run-to-run error bar. Move a
B's points if its measured optimum is not at the centre: B 8's long-horizon optimum fell at
η* ≈ 2^-3.1 (2^22–2^23), below its centre, so its 2^-3.5 run has a second seed too
(`EXTRA`). The norms are logged at every
evaluation (every 2^17 tokens, so at every horizon) rather than every 8 steps: the norm log
(exact SVDs of every matrix and its update) was ≈ 12% of the step at d 64, and logging does
not change training.
"""

import importlib.util
import os

import ml_collections


def _horizon():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_horizon.py")
    spec = importlib.util.spec_from_file_location("cpu_horizon", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# log2 η of extra seed-1 points beyond each B's centre ± 1, where the measured optimum moved.
EXTRA = {8: (-3.5,)}


def get_config():
    horizon = _horizon()
    sweep = ml_collections.ConfigDict()
    sweep.base = horizon.base()
    sweep.base.seed = 1
    points = horizon.points_by_priority(horizon.CENTRE, half_width=1) + tuple(
        horizon.point(b, log2_lr) for b, log2_lrs in EXTRA.items() for log2_lr in log2_lrs
    )
    sweep.grid = (
        (("batch_size", "optimizer.learning_rate", "eval_every", "norm_every"),
         tuple((*p, p[2]) for p in points)),
    )
    sweep.max_tokens = 2**23
    return sweep

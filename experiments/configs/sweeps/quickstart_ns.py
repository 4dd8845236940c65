"""The quickstart (`make run`, 300 steps) with each Newton–Schulz variant (issue 13).

Today's default (Frobenius scaling, 5 quintic steps), Gram NS, AOL preconditioning with one
step fewer, and both: their losses side by side (experiments/benchmarks/README.md). Run with
``sweep.py --config=experiments/configs/sweeps/quickstart_ns.py --sweep_dir=... --workers=2``.
"""

import importlib.util
import os

import ml_collections


def quickstart() -> ml_collections.ConfigDict:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "quickstart.py")
    spec = importlib.util.spec_from_file_location("quickstart", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config():
    sweep = ml_collections.ConfigDict()
    sweep.base = quickstart()
    keys = ("optimizer.ns_gram", "optimizer.ns_preconditioning", "optimizer.ns_steps")
    sweep.grid = (
        (keys, ((False, "frobenius", 5), (True, "frobenius", 5), (False, "aol", 4),
                (True, "aol", 4))),
    )
    sweep.max_tokens = sweep.base.steps * sweep.base.batch_size * sweep.base.seq_len
    return sweep

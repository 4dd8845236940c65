"""A run config saved as JSON (what sweeps write for each point):

python experiments/run.py --config=experiments/configs/from_json.py:/path/to/config.json

The JSON overrides `base_config()`, so a config saved before a key was added still runs
(with that key's default), and a key the trainer does not know is an error naming it.
"""

import json

from scion_jax.train.config import base_config


def get_config(path: str):
    with open(path) as f:
        stored = json.load(f)
    config = base_config()
    config.lock()
    config.update(stored)
    return config

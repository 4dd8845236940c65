"""A run config saved as JSON (what sweeps write for each point):

python experiments/run.py --config=experiments/configs/from_json.py:/path/to/config.json
"""

import json

import ml_collections


def get_config(path: str):
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))

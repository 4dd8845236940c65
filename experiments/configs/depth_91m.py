"""The paper's depth_91m model (PAPER.md §4), for GPU/TPU pods.

python experiments/run.py --config=experiments/configs/depth_91m.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    return paper_config("depth_91m", data_source)

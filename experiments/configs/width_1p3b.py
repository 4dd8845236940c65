"""The paper's width_1p3b model (PAPER.md §4), for GPU/TPU pods.

python experiments/run.py --config=experiments/configs/width_1p3b.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    return paper_config("width_1p3b", data_source)

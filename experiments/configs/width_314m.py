"""The paper's width_314m model (PAPER.md §4), for GPU/TPU pods.

python experiments/run.py --config=experiments/configs/width_314m.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    return paper_config("width_314m", data_source)

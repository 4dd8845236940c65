"""The paper's proxy_69m model (PAPER.md §4), for GPU/TPU pods.

python experiments/run.py --config=experiments/configs/proxy_69m.py:/path/to/prepared_data
"""

from scion_jax.train.config import paper_config


def get_config(data_source: str | None = None):
    return paper_config("proxy_69m", data_source)
